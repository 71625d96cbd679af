"""Shared fixtures: real photos, the real PostgreSQL server, moto's S3 server."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

pytest.register_assert_rewrite("pipeline_helpers")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORA_PIPELINES_SHARED", REPO_ROOT.parent / "shared"))
FACES_DIR = SHARED / "faces"
COMFYUI_SCHEMA_DIR = SHARED / "comfyui"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _need(condition: bool, reason: str) -> None:
    """Skip on a developer laptop; under CI a missing prerequisite is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    _need((FACES_DIR / "MANIFEST.csv").exists(), f"the shared test photos are missing at {FACES_DIR}")
    return FACES_DIR


def person_photos(faces_dir: Path, person: str) -> list[Path]:
    return sorted(p for p in (faces_dir / person).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})


@pytest.fixture(scope="session")
def comfyui_schema_dir() -> Path:
    _need((COMFYUI_SCHEMA_DIR / "object_info.json").exists(), f"the ComfyUI schema is missing at {COMFYUI_SCHEMA_DIR}")
    return COMFYUI_SCHEMA_DIR


@pytest.fixture(scope="session")
def real_schema(comfyui_schema_dir):
    """ComfyUI 0.3.64's /object_info (core + PuLID-Flux nodes) as dumped from a real server."""
    from lora_pipelines.workflows import comfy_schema

    return comfy_schema.load_object_info_files(comfyui_schema_dir / "object_info.json",
                                               comfyui_schema_dir / "object_info_pulid_flux.json")


@pytest.fixture(scope="session")
def analyzer():
    """The real dlib FaceAnalyzer."""
    from lora_pipelines.faces.embeddings import default_analyzer

    return default_analyzer()


@pytest.fixture(scope="module")
def sim(faces_dir):
    """The simulated GPU service shared by this test process (gpu_support.shared_sim)."""
    from gpu_support import shared_sim

    return shared_sim(faces_dir)


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll until condition() is truthy and return its value; an AssertionError naming `what` on timeout."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _postgres_url_or_fail() -> str:
    import sqlalchemy as sa

    url = TEST_DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server"
        _need(False, f"PostgreSQL is not reachable at {TEST_DATABASE_URL}: {exc.__class__.__name__}")
    return url


@pytest.fixture()
def postgres_url() -> str:
    """A fresh schema on the real PostgreSQL server, dropped afterwards."""
    import sqlalchemy as sa

    base = _postgres_url_or_fail()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    url = f"{base}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def app_db(request, tmp_path):
    """A migrated app database, once on SQLite and once on the real PostgreSQL."""
    from lora_pipelines.store.database import Database

    url = f"sqlite:///{tmp_path / 'app.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on a free localhost port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-access-key")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_bucket(moto_server):
    """A new bucket in moto's server (us-east-1); yields (endpoint_url, bucket)."""
    import boto3

    bucket = f"test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return moto_server, bucket


@pytest.fixture()
def lp_home(tmp_path, monkeypatch) -> Path:
    """An isolated LORA_PIPELINES_HOME with embedded defaults."""
    home = tmp_path / "lp_home"
    monkeypatch.setenv("LORA_PIPELINES_HOME", str(home))
    for var in ("LORA_PIPELINES_DATABASE_URL", "LORA_PIPELINES_STORE_URL", "LORA_PIPELINES_SIM_GPU_URL"):
        monkeypatch.delenv(var, raising=False)
    return home
