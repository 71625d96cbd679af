"""Installed as a package (`pip install .`, not editable): the wheel carries what the commands read, and the demo
runs from a folder that is not the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def test_the_packaged_instance_template_is_the_repository_one():
    """`dagster.yaml` at the root is what `dagster dev` users and deployments copy; the demo writes the package's."""
    packaged = REPO_ROOT / "lora_pipelines" / "templates" / "dagster.yaml"
    assert packaged.read_bytes() == (REPO_ROOT / "dagster.yaml").read_bytes(), (
        "lora_pipelines/templates/dagster.yaml differs from dagster.yaml; copy one over the other")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything pointing at the checkout or another home."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "DAGSTER_HOME", "VIRTUAL_ENV"} and not k.startswith("LORA_PIPELINES_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the built wheel; its dependencies come from this interpreter's site-packages, added
    by a .pth line (whose own .pth files, such as the editable install's, are therefore not run)."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # pip builds in the source folder: a copy keeps build/ and *.egg-info out of the checkout
    source.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", source / "pyproject.toml")
    for package in ("lora_pipelines", "modal_apps", "sim_gpu"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300, env=_clean_env())
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (root / "dist").glob("lora_pipelines-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300, env=_clean_env())
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "shared_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(shared)))
    return venv


def test_the_wheel_holds_the_package_not_the_checkout(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import lora_pipelines; print(lora_pipelines.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=_clean_env(), check=True).stdout
    assert Path(where.strip()).is_relative_to(installed), where


@pytest.mark.slow
def test_the_installed_demo_runs_from_another_folder(installed, tmp_path, faces_dir):
    photos = tmp_path / "photos"
    for person in ("barack_obama", "joe_biden"):
        shutil.copytree(faces_dir / person, photos / person)
    shutil.copytree(faces_dir / "kit_harington", photos / "tom_hanks")  # stands in for the no-LoRA character
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # ../shared/faces has 4 Obama photos (the README demo's download has 5, the default minimum); one base model
    # keeps the test short: the other models' generations take the fallback route, which the demo also shows
    env = _clean_env(LORA_PIPELINES_DEMO_PHOTOS_DIR=str(photos), LORA_PIPELINES_MIN_PHOTOS="3",
                     LORA_PIPELINES_TRAIN_BASE_MODELS="flux")

    home = tmp_path / "home"
    try:
        done = subprocess.run([str(installed / "bin" / "lora-pipelines"), "demo", "--home", str(home)],
                              cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        instance_yaml = (home / "dagster_home" / "dagster.yaml").read_bytes()
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the simulated GPU service the demo left running exits with it

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in ("report:", "LoRA usage rate:", "face match with LoRA:", "face match without LoRA:",
                 "generation success rate:", "fallback success rate:"):
        assert line in done.stdout, done.stdout[-3000:]
    assert "training_job [flux|" in done.stdout and "generation_job: succeeded" in done.stdout, done.stdout[-3000:]
    assert "dev -m lora_pipelines.definitions" in done.stdout, "no workspace.yaml once installed"
    assert instance_yaml == (REPO_ROOT / "dagster.yaml").read_bytes()
    assert list(elsewhere.iterdir()) == [], "the demo wrote into the current folder instead of --home"
