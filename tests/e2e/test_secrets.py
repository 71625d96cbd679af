"""Secrets (R2/S3 keys, Modal tokens, the database password) never appear in logs, metadata, errors or reports.

Recognizable fake secrets are set, every surface a user or operator reads is collected, and each text is
scanned for them. One documented exception: a presigned URL carries the access key ID (that is how S3 signs a
URL) — never the secret key — and it is allowed only inside such a URL.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import person_photos
from lora_pipelines.cli import main

ACCESS_KEY_ID = "AKIAFAKEHOSTILE00042"
SECRET_ACCESS_KEY = "fakeSecretKey/Hostile+0042abcdefghijklmnopq"
MODAL_KEY = "wk-fake-modal-key-0042"
MODAL_SECRET = "ws-fake-modal-secret-0042"
DB_PASSWORD = "fake-db-password-0042"
NEVER = (SECRET_ACCESS_KEY, MODAL_KEY, MODAL_SECRET, DB_PASSWORD)
# A presigned URL: ...?X-Amz-Algorithm=...&X-Amz-Credential=AKIA.../...&X-Amz-Signature=...
_PRESIGNED_QUERY = re.compile(r"\?[^\s\"'<>]*X-Amz-Credential=[^\s\"'<>]*")


def leaks(text: str) -> list[str]:
    """The secret values found in `text` (URL-encoded forms included); the access key ID counts only outside
    presigned-URL query strings."""
    from urllib.parse import quote, quote_plus

    found = [s for s in NEVER if any(form in text for form in {s, quote(s, safe=""), quote_plus(s)})]
    if ACCESS_KEY_ID in _PRESIGNED_QUERY.sub("?<presigned>", text):
        found.append(ACCESS_KEY_ID)
    return found


def assert_clean(texts: dict[str, str]) -> None:
    dirty = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not dirty, f"secrets leaked: {dirty}"


@pytest.fixture()
def secret_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("LORA_PIPELINES_MODAL_KEY", MODAL_KEY)
    monkeypatch.setenv("LORA_PIPELINES_MODAL_SECRET", MODAL_SECRET)
    return monkeypatch


@pytest.fixture()
def pg_url_with_password(postgres_url) -> str:
    """The test schema's URL with a password in it (the server trusts local connections, so any password works)."""
    import sqlalchemy as sa

    return sa.make_url(postgres_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def test_the_scanner_finds_what_it_looks_for():
    assert leaks(f"error: {SECRET_ACCESS_KEY}") == [SECRET_ACCESS_KEY]
    assert leaks("postgresql://postgres:fake-db-password-0042@db/x") == [DB_PASSWORD]
    assert leaks(f"key {ACCESS_KEY_ID} in a message") == [ACCESS_KEY_ID]
    assert leaks(f"http://s3/b/k?X-Amz-Credential={ACCESS_KEY_ID}%2F20250101&X-Amz-Signature=ab") == []


# --- the object store -----------------------------------------------------------------------------------


def test_s3_store_errors_reprs_logs_and_presigned_urls_carry_no_secret(secret_env, s3_bucket, caplog):
    from lora_pipelines.store.objects import ObjectStoreError
    from lora_pipelines.store.objects.s3 import S3ObjectStore

    endpoint, bucket = s3_bucket
    caplog.set_level(logging.DEBUG, logger="lora_pipelines")
    caplog.set_level(logging.INFO)
    store = S3ObjectStore(bucket, "prefix", endpoint_url=endpoint, max_attempts=1)
    store.put_bytes("a/b.bin", b"payload")
    errors: list[BaseException] = []
    actions = [
        lambda: store.get_bytes("a/missing.bin"),
        lambda: store.get_bytes("a/b.bin", expected_sha256="0" * 64),
        lambda: S3ObjectStore("no-such-bucket-0042", endpoint_url=endpoint, max_attempts=1).put_bytes("x", b"1"),
        lambda: S3ObjectStore(bucket, endpoint_url="http://127.0.0.1:9", max_attempts=1).stat("x"),
        lambda: store.download_file("a/b.bin", Path("/nonexistent-dir/x"), expected_sha256="1" * 64),
    ]
    for action in actions:
        with pytest.raises((ObjectStoreError, OSError)) as caught:
            action()
        errors.append(caught.value)
    url = store.presigned_url("a/b.bin")

    assert {type(e).__name__ for e in errors} >= {"ObjectNotFoundError", "ChecksumMismatchError", "ObjectStoreError"}
    texts = {f"error {i}": f"{e!s} {e!r} {e.__cause__!r} {e.__context__!r}" for i, e in enumerate(errors)}
    assert_clean({**texts, "repr": repr(store), "uri": store.uri("a/b.bin"), "logs": caplog.text})
    assert ACCESS_KEY_ID in url and SECRET_ACCESS_KEY not in url  # the documented exception
    assert leaks(url) == []


def test_reprs_of_store_database_resources_and_clients_carry_no_secret(secret_env, s3_bucket, tmp_path):
    from lora_pipelines.definitions import defs
    from lora_pipelines.gpu.endpoints import ModalEndpointsClient
    from lora_pipelines.store.database import Database, display_url
    from lora_pipelines.store.objects.s3 import S3ObjectStore

    endpoint, bucket = s3_bucket
    url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/test"
    secret_env.setenv("LORA_PIPELINES_DATABASE_URL", url)
    secret_env.setenv("LORA_PIPELINES_STORE_URL", f"s3://{bucket}/p")
    secret_env.setenv("LORA_PIPELINES_S3_ENDPOINT_URL", endpoint)
    secret_env.setenv("LORA_PIPELINES_HOME", str(tmp_path))
    db = Database(url)
    client = ModalEndpointsClient("http://127.0.0.1:9", key=MODAL_KEY, secret=MODAL_SECRET)
    try:
        resources = defs().resources
        texts = {
            "Database": repr(db), "display_url": display_url(url), "engine": repr(db.engine),
            "S3ObjectStore": repr(S3ObjectStore(bucket, endpoint_url=endpoint)),
            **{f"resource {name}": f"{r!r} {r.__dict__!r}" for name, r in resources.items()},
            "ModalEndpointsClient": f"{client!r} {client.http!r} {client.http._client!r}",
        }
    finally:
        client.close()
        db.dispose()
    assert_clean(texts)


def test_settings_and_pipeline_context_reprs_carry_no_secret(secret_env, tmp_path):
    from lora_pipelines.services.context import PipelineContext
    from lora_pipelines.settings import load_settings

    secret_env.setenv("LORA_PIPELINES_DATABASE_URL", f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/test")
    secret_env.setenv("LORA_PIPELINES_HOME", str(tmp_path))
    settings = load_settings()
    assert_clean({"Settings": f"{settings!r} {settings!s}",
                  "PipelineContext": repr(PipelineContext.from_settings(settings))})


# --- the Modal endpoints ----------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """A hostile or broken endpoint: answers `status` and echoes every request header back in the body."""

    status = 500

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        body = json.dumps({"error": f"upstream failed; you sent {headers}", "detail": headers}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _request():
    from lora_pipelines.gpu.schemas import GenerateRequest

    return GenerateRequest(model="flux", prompt="a portrait", width=64, height=64, seed=1)


def test_modal_endpoint_errors_never_carry_the_tokens(secret_env, tmp_path, echo_server, caplog):
    from lora_pipelines.gpu.endpoints import ModalEndpointsClient
    from lora_pipelines.gpu.errors import GpuBackendError, GpuPermanentError
    from sim_gpu.server import SimGpuServer

    caplog.set_level(logging.DEBUG, logger="lora_pipelines")
    caplog.set_level(logging.INFO)
    texts: dict[str, str] = {}
    with SimGpuServer(tmp_path / "sim", modal_key=MODAL_KEY, modal_secret=MODAL_SECRET) as sim:
        wrong = ModalEndpointsClient(sim.url, key=MODAL_KEY, secret="ws-wrong-secret", attempts=1, timeout_s=10)
        with pytest.raises(GpuPermanentError) as refused:
            wrong.generate("standard", _request())
        wrong.close()
        right = ModalEndpointsClient(sim.url, key=MODAL_KEY, secret=MODAL_SECRET, attempts=1, timeout_s=30)
        response = right.generate("standard", _request())  # the same service accepts the right tokens
        right.close()
    assert refused.value.status_code == 401 and "Modal-Key / Modal-Secret" in str(refused.value)
    assert response.backend == "simulated"
    texts["401"] = f"{refused.value!s} {refused.value!r} {refused.value.detail!r}"
    texts["response"] = response.model_dump_json()

    url = f"http://127.0.0.1:{echo_server.server_address[1]}"
    for status in (500, 401):
        _Echo.status = status
        client = ModalEndpointsClient(url, key=MODAL_KEY, secret=MODAL_SECRET, attempts=2, timeout_s=5)
        with pytest.raises(GpuBackendError) as caught:
            client.generate("flux-lora", _request())
        client.close()
        assert caught.value.status_code == status and "***" in str(caught.value)  # echoed, then scrubbed
        texts[f"echo {status}"] = f"{caught.value!s} {caught.value!r} {caught.value.detail!r}"
    texts["logs"] = caplog.text
    assert_clean(texts)


# --- the CLI and a Dagster run ------------------------------------------------------------------------------


@pytest.fixture()
def secret_world(secret_env, pg_url_with_password, s3_bucket, tmp_path, faces_dir):
    """A pipeline on PostgreSQL (URL with a password) and S3 (moto, fake keys), with the Modal tokens set, its
    Dagster resources read from the environment as in production, a character with a photo and a ready flux
    LoRA (so generation hands the backend a presigned URL)."""
    import dagster as dg

    from lora_pipelines.domain.keys import lora_key
    from lora_pipelines.services.characters import add_character
    from lora_pipelines.services.context import PipelineContext
    from lora_pipelines.store.lora_models import LoraModelsRepository
    from pipeline_helpers import BASE_ENV, build_definitions
    from sim_gpu.files import lora_file_bytes
    from sim_gpu.server import SimGpuServer

    endpoint, bucket = s3_bucket
    env = {**BASE_ENV, "LORA_PIPELINES_HOME": str(tmp_path / "home"),
           "LORA_PIPELINES_DATABASE_URL": pg_url_with_password, "LORA_PIPELINES_STORE_URL": f"s3://{bucket}/lp",
           "LORA_PIPELINES_S3_ENDPOINT_URL": endpoint, "LORA_PIPELINES_GPU_BACKEND": "simulated"}
    for var in ("LORA_PIPELINES_COMFYUI_URL", "LORA_PIPELINES_MODAL_ENDPOINT_URL", "LORA_PIPELINES_SIM_FAULTS"):
        secret_env.delenv(var, raising=False)
    with SimGpuServer(tmp_path / "sim", training_seconds=0.1) as sim, dg.instance_for_test() as instance:
        for var, value in {**env, "LORA_PIPELINES_SIM_GPU_URL": sim.url}.items():
            secret_env.setenv(var, value)
        ctx = PipelineContext.from_settings()
        ctx.db.upgrade()
        character, _ = add_character(ctx, "Katy", [person_photos(faces_dir, "katy_perry")[-1]], lora_enabled=True)
        data = lora_file_bytes(base_model="flux", trigger_word=character.trigger_word, rank=4, steps=10, faces=[],
                               character_id=str(character.id), seed=1)
        key = lora_key("flux", str(character.id), "job1")
        info = ctx.store.put_bytes(key, data)
        loras = LoraModelsRepository(ctx.db)
        row = loras.create(character.id, "flux", character.trigger_word, idempotency_key=f"secrets-{uuid.uuid4()}")
        loras.transition(row.id, "training")
        loras.transition(row.id, "ready", model_path=key, sha256=info.sha256, size_bytes=len(data),
                         model_url=ctx.store.presigned_url(key))
        yield {"ctx": ctx, "defs": build_definitions(), "instance": instance, "character": character}
        ctx.db.dispose()


def _run(world: dict, job_name: str, run_config: dict | None = None):
    from pipeline_helpers import QUIET

    job = world["defs"].resolve_job_def(job_name)
    return job.execute_in_process(instance=world["instance"], run_config={**QUIET, **(run_config or {})},
                                  raise_on_error=False)


def test_dagster_runs_cli_output_and_reports_carry_no_secret(secret_world, tmp_path, caplog):
    from dagster._serdes import serialize_value

    from lora_pipelines.store.generation_jobs import GenerationJobsRepository

    world, ctx = secret_world, secret_world["ctx"]
    caplog.set_level(logging.INFO)
    jobs = GenerationJobsRepository(ctx.db)
    ids = jobs.enqueue(world["character"].id, "flux", "portrait in a park", count=2)
    ids += jobs.enqueue(world["character"].id, "no-such-model", "portrait", count=1)

    generation = _run(world, "generation_job", {"ops": {"generation_outputs": {"config": {"job_ids": ids}}}})
    report = _run(world, "report_job")
    runner = CliRunner()
    cli = {
        "status --json": runner.invoke(main, ["status", "--json"]),
        "status": runner.invoke(main, ["status"]),
        "generate unknown model":
            runner.invoke(main, ["generate", "--character", "1", "--model", "x", "--prompt", "p"]),
        "character add bad folder":
            runner.invoke(main, ["character", "add", "--name", "A", "--photos", "/nonexistent"]),
        "inspect-lora": runner.invoke(main, ["inspect-lora", str(Path(__file__))]),
    }

    assert generation.success and report.success
    assert [jobs.get(i).status for i in ids] == ["succeeded", "succeeded", "failed"]
    assert jobs.get(ids[0]).mode == "lora"  # the presigned LoRA URL was used
    assert cli["status --json"].exit_code == 0 and json.loads(cli["status --json"].stdout)["characters"]
    texts: dict[str, str] = {f"cli {name}": f"{r.stdout}\n{r.stderr}\n{r.exception!r}" for name, r in cli.items()}
    instance = world["instance"]
    for run in (generation, report):
        texts[f"event log {run.run_id}"] = "\n".join(serialize_value(e) for e in instance.all_logs(run.run_id))
        records = instance.get_records_for_run(run.run_id).records
        texts[f"event records {run.run_id}"] = "\n".join(serialize_value(r.event_log_entry) for r in records)
    for path in Path(instance.root_directory).rglob("*"):  # run storage, event logs, compute logs
        if path.is_file():
            texts[f"instance file {path.name}"] = path.read_bytes().decode("utf-8", "replace")
    reports = ctx.store.list("reports/")
    assert any(info.key.endswith(".html") for info in reports)
    for info in reports:
        texts[f"report {info.key}"] = ctx.store.get_bytes(info.key).decode("utf-8", "replace")
    for job_id in ids:
        texts[f"job {job_id}"] = repr(jobs.get(job_id))
    texts["logs"] = caplog.text
    # the scan reads real content: the runs' events, the status document, the report
    assert "generation_outputs" in texts[f"event log {generation.run_id}"]
    assert ctx.store.url in texts["cli status --json"] and "lora_quality_report" in texts[f"event log {report.run_id}"]
    assert_clean(texts)
