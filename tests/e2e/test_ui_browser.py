"""The README's demo command, then the Dagster UI in Debian's chromium: lineage, a successful run, check results.

Screenshots are saved under test-artifacts/ui/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import IN_CI, REPO_ROOT
from lora_pipelines.gpu.sim_launcher import free_port

ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory, faces_dir):
    """The demo, run as the README says, on photos from ../shared/faces instead of the package download."""
    home = tmp_path_factory.mktemp("ui") / "home"
    photos = home.parent / "photos"
    for person in ("barack_obama", "joe_biden"):
        shutil.copytree(faces_dir / person, photos / person)
    shutil.copytree(faces_dir / "kit_harington", photos / "tom_hanks")  # stands in for the no-LoRA character
    # ../shared/faces has 4 Obama photos; the sdist the README demo downloads has 5 (the default minimum)
    env = {**os.environ, "LORA_PIPELINES_DEMO_PHOTOS_DIR": str(photos), "DAGSTER_HOME": str(home / "dagster_home"),
           "LORA_PIPELINES_MIN_PHOTOS": "3"}
    env.pop("LORA_PIPELINES_HOME", None)
    done = subprocess.run([str(BIN / "lora-pipelines"), "demo", "--home", str(home)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "LoRA usage rate:" in done.stdout and "report:" in done.stdout, done.stdout
    return home, done.stdout


@pytest.fixture(scope="module")
def webserver(demo_home):
    home, _ = demo_home
    port = free_port()
    env = {**os.environ, "LORA_PIPELINES_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    log = open(home / "webserver.log", "w")
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (home / "webserver.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("dagster-webserver did not answer within 120 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(webserver):
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("CI=true and Debian's chromium is not installed")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1900, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip")  # the one-time community dialog
    if skip.count():
        skip.click()


def test_lineage_graph_shows_training_and_generation_assets(page, webserver):
    _open(page, f"{webserver}/assets/generation_outputs?view=lineage")
    page.get_by_role("button", name="All", exact=True).click()
    for asset in ("training_dataset", "trained_lora", "lora_artifact", "generation_outputs", "lora_quality_report"):
        page.get_by_text(asset, exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "lineage.png"))


def _run_ids(home: Path, job_name: str) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        return [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=job_name))]


def test_a_run_page_shows_success(page, webserver, demo_home):
    _open(page, f"{webserver}/runs")
    page.get_by_text("generation_job", exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "runs.png"))
    run_id = _run_ids(demo_home[0], "generation_job")[0]
    _open(page, f"{webserver}/runs/{run_id}")
    page.get_by_text(run_id[:8]).first.wait_for()
    page.get_by_text("Success", exact=True).first.wait_for()
    page.get_by_text("generation_outputs", exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "run.png"))


def test_asset_checks_show_their_results(page, webserver):
    _open(page, f"{webserver}/assets/generation_outputs?view=checks")
    for check in ("face_consistency", "lora_usage_rate", "generation_success_rate", "fallback_success"):
        page.get_by_text(check, exact=True).first.wait_for()
    body = page.inner_text("body")
    assert body.count("Succeeded") + body.count("Passed") >= 4, body[:2000]
    page.screenshot(path=str(ARTIFACTS / "generation_checks.png"))
    _open(page, f"{webserver}/assets/lora_artifact?view=checks")
    for check in ("header_valid", "base_model_matches", "checksum_matches"):
        page.get_by_text(check, exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "artifact_checks.png"))


def test_demo_prints_headline_numbers(demo_home):
    _, out = demo_home
    for line in ("LoRA usage rate:", "face match with LoRA:", "face match without LoRA:", "generation success rate:",
                 "fallback success rate:"):
        assert line in out
    assert "training_job [flux|" in out and "generation_job: succeeded" in out
