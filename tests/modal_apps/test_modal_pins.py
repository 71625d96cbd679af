"""Every pin of the Modal images lives in modal_apps/pins.py, is exact, and docs/modal.md says how it was verified;
nothing is left marked UNVERIFIED. The ComfyUI pod table in the docs is the one the code derives."""

from __future__ import annotations

import re

from conftest import REPO_ROOT
from lora_pipelines.workflows.model_files import MODEL_FILE_SOURCES
from lora_pipelines.workflows.pod_needs import NODE_PACKS, named_workflow_needs
from modal_apps import pins

DOC = (REPO_ROOT / "docs" / "modal.md").read_text()


def pinned(packages) -> dict[str, str]:
    return dict(p.split("==", 1) for p in packages if "==" in p)


def test_nothing_is_left_unverified():
    for path in [*sorted((REPO_ROOT / "modal_apps").glob("*.py")), REPO_ROOT / "docs" / "modal.md"]:
        assert "UNVERIFIED" not in path.read_text(), path


def test_the_images_take_their_versions_from_the_pins_module():
    for name in ("training.py", "generation.py", "trainer_config.py", "diffusers_runner.py"):
        source = (REPO_ROOT / "modal_apps" / name).read_text()
        assert not re.search(r'"[A-Za-z0-9_.\-\[\]]+==\d', source), f"{name} pins a version itself"
        assert "pins." in source, name
    assert re.fullmatch(r"[0-9a-f]{40}", pins.AI_TOOLKIT_COMMIT)


def test_torch_is_the_triple_ai_toolkit_installs():
    torch = pinned(pins.TORCH_PACKAGES)
    assert set(torch) == {"torch", "torchvision", "torchaudio"}
    assert pinned(pins.GENERATION_TORCH_PACKAGES) == {k: torch[k] for k in ("torch", "torchvision")}
    assert pins.TORCH_INDEX_URL.startswith("https://download.pytorch.org/whl/cu")
    ml = pinned(pins.GENERATION_ML_PACKAGES)
    assert {"diffusers", "transformers", "accelerate", "peft", "huggingface_hub"} <= set(ml)
    assert tuple(int(x) for x in ml["diffusers"].split(".")[:2]) >= (0, 36)


def test_the_docs_say_where_every_pin_was_read():
    versions = {**pinned(pins.TORCH_PACKAGES), **pinned(pins.GENERATION_ML_PACKAGES),
                **pinned(pins.FACE_SWAP_PACKAGES), **pinned([pins.INSIGHTFACE_PACKAGE])}
    for package, version in versions.items():
        assert version in DOC, f"{package}=={version} is not in docs/modal.md"
    for value in (pins.AI_TOOLKIT_COMMIT, pins.TORCH_INDEX_URL, pins.AI_TOOLKIT_PYTHON, pins.Z_IMAGE_TRAINING_ADAPTER,
                  pins.FLUX_DEV_REPO, pins.QWEN_IMAGE_2512_REPO, pins.Z_IMAGE_TURBO_REPO, pins.WAN21_T2V_14B_REPO,
                  pins.WAN22_T2V_A14B_REPO, pins.WAN22_TRAINING_REPO, pins.INSWAPPER_REPO, pins.INSWAPPER_FILE):
        assert value in DOC, value
    for package in pins.AI_TOOLKIT_APT:
        assert package in DOC, package


def test_the_pod_table_in_the_docs_is_the_codes():
    rows = {line.split("|")[1].strip().strip("`"): line for line in DOC.splitlines()
            if line.startswith("| `") and "models/<folder>" not in line}
    for name, needs in named_workflow_needs().items():
        row = rows[name]
        assert f">= {needs.min_comfyui_version}" in row, name
        for model_file in needs.model_files:
            assert f"`{model_file}`" in row, (name, str(model_file))
            assert model_file.name in MODEL_FILE_SOURCES
        assert ("core only" in row) == (not needs.node_packs)
        for pack in needs.node_packs:
            assert pack.repository in row
    for pack in NODE_PACKS:
        assert pack.commit in DOC
