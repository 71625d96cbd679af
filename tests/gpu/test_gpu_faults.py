"""Retries, timeouts and refusals of the GPU clients against faults injected by the simulated service.
Request counts come from the service's own /_sim/stats, so "retried" and "not retried" are measured."""

from __future__ import annotations

import base64
import hashlib
import time

import httpx
import pytest

from gpu_support import MODAL_KEY, MODAL_SECRET
from lora_pipelines.gpu.comfyui import ComfyUIClient
from lora_pipelines.gpu.endpoints import ModalEndpointsClient, endpoint_url
from lora_pipelines.gpu.errors import GpuBackendError, GpuPermanentError, GpuTimeoutError, GpuTransientError
from lora_pipelines.gpu.schemas import GenerateRequest, LoraRef
from lora_pipelines.gpu.simulated import SimulatedTrainingBackend
from lora_pipelines.settings import Settings

SMALL = GenerateRequest(model="z-image-turbo", prompt="a lighthouse", width=64, height=64, seed=1)


@pytest.fixture()
def faults(sim):
    """Set faults for one test; stats are reset first so counts are this test's alone."""

    def apply(endpoints: dict, seed: int = 1) -> None:
        httpx.post(f"{sim.url}/_sim/faults", json={"seed": seed, "endpoints": endpoints}).raise_for_status()
        httpx.post(f"{sim.url}/_sim/reset_stats").raise_for_status()

    apply({})
    yield apply
    apply({})


def requests_to(sim, endpoint: str) -> int:
    return httpx.get(f"{sim.url}/_sim/stats").json()["requests"].get(endpoint, 0)


def client(sim, **kw) -> ModalEndpointsClient:
    kw.setdefault("timeout_s", 10)
    return ModalEndpointsClient(sim.url, key=MODAL_KEY, secret=MODAL_SECRET, name="simulated", **kw)


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_errors_are_retried_until_success(sim, faults, status):
    faults({"standard": {"error_rate": 1.0, "error_statuses": [status], "max_faults": 2}})
    response = client(sim).generate("standard", SMALL)
    assert response.backend == "simulated"
    assert requests_to(sim, "standard") == 3


def test_random_error_rate_is_absorbed_by_retries(sim, faults):
    faults({"poll": {"error_rate": 0.4}}, seed=1)  # seeded: at most 2 failures in a row
    backend = SimulatedTrainingBackend(sim.url, attempts=4)
    backend.http.backoff_initial_s = 0.01
    states = [backend.poll("fc-unknown").state for _ in range(8)]
    assert states == ["lost"] * 8
    stats = httpx.get(f"{sim.url}/_sim/stats").json()
    assert stats["requests"]["poll"] > 8  # some were answered 5xx/429 and retried
    assert set(stats["statuses"]["poll"]) - {"404"}


def test_persistent_5xx_gives_up_as_transient_after_the_attempts(sim, faults):
    faults({"standard": {"error_rate": 1.0, "error_statuses": [503]}})
    with pytest.raises(GpuTransientError) as caught:
        client(sim, attempts=3).generate("standard", SMALL)
    assert requests_to(sim, "standard") == 3
    assert (caught.value.status_code, caught.value.backend, caught.value.endpoint) == (503, "simulated", "/standard")


def test_refusal_is_not_retried(sim, faults):
    faults({})
    request = SMALL.model_copy(update={"lora": LoraRef(lora_model_id="9", url="file:///nowhere.safetensors",
                                                       sha256="0" * 64, base_model="flux", trigger_word="x")})
    with pytest.raises(GpuPermanentError) as caught:
        client(sim).generate("standard", request)
    assert caught.value.status_code == 422
    assert requests_to(sim, "standard") == 1


def test_hang_times_out_within_the_configured_timeout(sim, faults):
    faults({"standard": {"hang": True}})
    started = time.monotonic()
    with pytest.raises(GpuTimeoutError) as caught:
        client(sim, timeout_s=1.0).generate("standard", SMALL)
    assert time.monotonic() - started < 3.0
    assert "1s" in str(caught.value) and "/standard" in str(caught.value)


def test_latency_and_cold_start_are_applied(sim, faults):
    faults({"standard": {"latency_ms": 100, "cold_start_ms": 400}})
    c = client(sim)
    started = time.monotonic()
    c.generate("standard", SMALL)
    first = time.monotonic() - started
    started = time.monotonic()
    c.generate("standard", SMALL)
    second = time.monotonic() - started
    assert first >= 0.5 and 0.1 <= second < first


def test_truncated_body_is_detected_and_retried(sim, faults):
    faults({"standard": {"truncated_response": True, "max_faults": 1}})
    response = client(sim).generate("standard", SMALL)
    assert base64.b64decode(response.image_b64).startswith(b"\x89PNG")
    assert requests_to(sim, "standard") == 2


def test_truncated_download_never_passes_as_a_file(sim, faults, faces_dir, tmp_path):
    from gpu_support import trained_lora

    trained = trained_lora(faces_dir, "flux")
    faults({"files": {"truncated_response": True}})
    backend = SimulatedTrainingBackend(sim.url, attempts=2)
    backend.http.backoff_initial_s = 0.01
    with pytest.raises(GpuTransientError, match="RemoteProtocolError|sha256"):
        backend.fetch_artifact(trained.result, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_modal_credentials_are_refused_without_retry(sim, faults):
    faults({})
    with pytest.raises(GpuPermanentError) as caught:
        ModalEndpointsClient(sim.url, name="simulated", timeout_s=5).generate("standard", SMALL)
    assert caught.value.status_code == 401
    assert requests_to(sim, "standard") == 1


def test_secrets_never_appear_in_errors(sim, faults):
    """Every error kind raised with real credentials configured: no message, repr or detail shows them."""
    wrong_secret = "ws-wrong-secret-77aa91"
    errors: list[BaseException] = []
    faults({"standard": {"error_rate": 1.0, "error_statuses": [503]}})
    for c in (client(sim, attempts=2), ModalEndpointsClient(sim.url, key=MODAL_KEY, secret=wrong_secret, timeout_s=5)):
        with pytest.raises(GpuBackendError) as caught:
            c.generate("standard", SMALL)
        errors.append(caught.value)
    faults({"standard": {"hang": True}})
    with pytest.raises(GpuBackendError) as caught:
        client(sim, timeout_s=0.5).generate("standard", SMALL)
    errors.append(caught.value)
    with pytest.raises(GpuBackendError) as caught:
        ModalEndpointsClient("http://127.0.0.1:9/{route}", key=MODAL_KEY, secret=MODAL_SECRET, attempts=1).generate(
            "standard", SMALL)
    errors.append(caught.value)
    settings = Settings(modal_key=MODAL_KEY, modal_secret=MODAL_SECRET)
    texts = [str(e) + repr(e) + repr(getattr(e, "detail", "")) for e in errors] + [repr(settings), str(settings)]
    for text in texts:
        for secret in (MODAL_KEY, MODAL_SECRET, wrong_secret):
            assert secret not in text


def test_comfyui_400_is_permanent_and_carries_node_errors(sim, faults):
    from lora_pipelines.workflows.builders import build_workflow
    from lora_pipelines.workflows.lora import insert_lora

    faults({})
    workflow = insert_lora(build_workflow("z-image-danrisi", "a cat", seed=1, steps=4, width=256, height=256),
                           "no_such_lora.safetensors", strength_clip=0)
    with pytest.raises(GpuPermanentError) as caught:
        ComfyUIClient(sim.url).queue_prompt(workflow)
    errors = [e for entry in caught.value.node_errors.values() for e in entry["errors"]]
    assert [e["type"] for e in errors] == ["value_not_in_list"]
    assert errors[0]["extra_info"]["received_value"] == "no_such_lora.safetensors"
    assert "lora_name" in str(caught.value)
    assert requests_to(sim, "prompt") == 1


def test_comfyui_unknown_node_type_is_refused_before_queueing(sim, faults):
    from lora_pipelines.gpu.comfyui import UnknownNodeTypeError
    from lora_pipelines.workflows.builders import build_workflow

    faults({})
    workflow = build_workflow("z-image-danrisi", "a cat", seed=1, steps=4, width=256, height=256)
    workflow["99"] = {"class_type": "FaceDetailerPlus", "inputs": {}}
    with pytest.raises(UnknownNodeTypeError, match="FaceDetailerPlus"):
        ComfyUIClient(sim.url).queue_prompt(workflow)
    assert requests_to(sim, "prompt") == 0


def test_comfyui_run_refuses_a_lora_missing_from_models_loras_before_queueing(sim, faults):
    from lora_pipelines.gpu.comfyui import LoraNotOnPodError
    from lora_pipelines.workflows.builders import build_workflow
    from lora_pipelines.workflows.lora import insert_lora

    faults({})
    workflow = insert_lora(build_workflow("z-image-danrisi", "a cat", seed=1, steps=4, width=64, height=64),
                           "not-delivered-77.safetensors")
    with pytest.raises(LoraNotOnPodError, match="not-delivered-77.safetensors") as caught:
        ComfyUIClient(sim.url).run(workflow, timeout_s=10)
    assert caught.value.endpoint == "/models/loras"
    assert requests_to(sim, "models") == 1 and requests_to(sim, "prompt") == 0


def test_comfyui_wait_is_bounded(sim, faults):
    from lora_pipelines.workflows.builders import build_workflow

    faults({})
    c = ComfyUIClient(sim.url)  # 100 steps take the simulated pod about a second
    prompt_id = c.queue_prompt(build_workflow("z-image-danrisi", "a cat", seed=1, steps=100, width=64, height=64))
    started = time.monotonic()
    with pytest.raises(GpuTimeoutError) as caught:
        c.wait(prompt_id, timeout_s=0.2, poll_interval=0.05)
    assert time.monotonic() - started < 2.0 and caught.value.call_id == prompt_id


def test_endpoint_url_placeholder():
    assert endpoint_url("https://ws--{route}.modal.run", "flux-lora") == "https://ws--flux-lora.modal.run"
    assert endpoint_url("http://127.0.0.1:8189/", "face-swap") == "http://127.0.0.1:8189/face-swap"


class _Recorder:
    """A plain HTTP server on localhost answering scripted routes and recording each request's headers."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        import http.server
        import threading

        self.routes, self.seen = routes, []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.seen.append((self.command, self.path, dict(self.headers)))
                status, headers, body = recorder.routes.get(self.path, (404, {}, b"{}"))
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value.replace("{self}", recorder.url))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _response_json() -> bytes:
    from lora_pipelines.gpu.schemas import GenerateResponse

    return GenerateResponse(image_b64="aGk=", mode="standard", model="z-image-turbo", prompt="a lighthouse", seed=1,
                            backend="modal", duration_ms=1.0).model_dump_json().encode()


def test_modal_credentials_follow_a_redirect_to_the_same_origin_only():
    """Modal answers a slow endpoint with 303 to a result URL on its own host; a redirect elsewhere must not
    carry Modal-Key / Modal-Secret (httpx itself strips only Authorization)."""
    elsewhere = _Recorder({"/result": (200, {}, _response_json())})
    modal = _Recorder({"/standard": (303, {"Location": "{self}/result"}, b""),
                       "/result": (200, {}, _response_json()),
                       "/away/standard": (303, {"Location": f"{elsewhere.url}/result"}, b"")})
    try:
        same = ModalEndpointsClient(modal.url, key=MODAL_KEY, secret=MODAL_SECRET, timeout_s=5)
        assert same.generate("standard", SMALL).backend == "modal"
        away = ModalEndpointsClient(f"{modal.url}/away", key=MODAL_KEY, secret=MODAL_SECRET, timeout_s=5)
        assert away.generate("standard", SMALL).backend == "modal"
    finally:
        modal.close()
        elsewhere.close()
    followed = [(method, path, headers.get("Modal-Key"), headers.get("Modal-Secret"))
                for method, path, headers in modal.seen]
    assert followed == [("POST", "/standard", MODAL_KEY, MODAL_SECRET), ("GET", "/result", MODAL_KEY, MODAL_SECRET),
                        ("POST", "/away/standard", MODAL_KEY, MODAL_SECRET)]
    assert [path for _, path, _ in elsewhere.seen] == ["/result"]
    assert not {"modal-key", "modal-secret"} & {name.lower() for name in elsewhere.seen[0][2]}


def test_an_answer_outside_the_shared_schema_is_a_malformed_response_not_retried():
    from lora_pipelines.gpu.errors import GpuMalformedResponseError

    server = _Recorder({"/standard": (200, {}, b'{"image_b64": "aGk=", "mode": "standard"}'),
                        "/functions/lora-training/train_lora/spawn": (200, {}, b'{"call": "fc-1"}'),
                        "/function-calls/fc-1": (200, {}, b'{"call_id": "fc-1", "state": "sleeping"}')})
    try:
        with pytest.raises(GpuMalformedResponseError, match="GenerateResponse") as caught:
            ModalEndpointsClient(server.url, timeout_s=5).generate("standard", SMALL)
        assert caught.value.endpoint == "/standard" and "model" in str(caught.value)
        training = SimulatedTrainingBackend(server.url, timeout_s=5)
        with pytest.raises(GpuMalformedResponseError, match="SpawnResponse"):
            training.submit_training(_spec())
        with pytest.raises(GpuMalformedResponseError, match="state") as polled:
            training.poll("fc-1")
        assert polled.value.call_id == "fc-1"
    finally:
        server.close()
    assert [path for _, path, _ in server.seen].count("/standard") == 1


def _spec():
    from lora_pipelines.gpu.schemas import TrainingSpec

    return TrainingSpec(character_id="7", lora_model_id="41", base_model="flux", dataset_url="https://r2.example/d.zip",
                        dataset_sha256="a" * 64, trigger_word="jnfrstn",
                        output_key="loras/flux-character-7/41.safetensors", idempotency_key="7:flux:abc:attempt1")


def test_concurrent_artifact_fetches_to_one_path_all_succeed(sim, faults, faces_dir, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from gpu_support import trained_lora

    trained = trained_lora(faces_dir, "flux")
    faults({})
    backend = SimulatedTrainingBackend(sim.url)
    dest = tmp_path / "a.safetensors"
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: backend.fetch_artifact(trained.result, dest), range(16)))
    assert set(paths) == {dest}
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == trained.result.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]  # no temp file left behind
