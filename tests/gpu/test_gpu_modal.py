"""The Modal training backend behind our FunctionCaller seam, driven by a stand-in caller (not a fake Modal
client: the seam is our own three-call interface), and the Modal endpoints client against the simulated routes."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from modal.exception import ConnectionError as ModalConnectionError
from modal.exception import FunctionTimeoutError, NotFoundError, OutputExpiredError
from safetensors.numpy import save_file

from lora_pipelines.domain.lora_format import lora_tensor_shapes
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.errors import GpuMalformedResponseError, GpuPermanentError, GpuTimeoutError
from lora_pipelines.gpu.modal_backend import ModalTrainingBackend
from lora_pipelines.gpu.schemas import TrainingResult, TrainingSpec

SPEC = TrainingSpec(character_id="7", lora_model_id="41", base_model="flux", dataset_url="https://r2.example/d.zip",
                    dataset_sha256="a" * 64, trigger_word="jnfrstn", output_key="loras/flux-character-7/41.safetensors",
                    idempotency_key="7:flux:abc:attempt1")
RESULT = {"base_model": "flux", "trigger_word": "jnfrstn", "sha256": "b" * 64, "size_bytes": 123,
          "object_key": "loras/flux-character-7/41.safetensors", "backend": "modal"}


class ScriptedCaller:
    """Answers `get` from a script: each item is a value to return or an exception to raise; answers `call` with
    slices of `volume_file` (the bytes read_lora would read), after raising the `call_failures` in turn."""

    def __init__(self, *script, volume_file: bytes = b"", call_failures=()) -> None:
        self.script = list(script)
        self.spawned: list[tuple[str, str, dict]] = []
        self.cancelled: list[str] = []
        self.gets = 0
        self.volume_file = volume_file
        self.call_failures = list(call_failures)
        self.calls: list[tuple[str, str, dict]] = []

    def spawn(self, app: str, function: str, payload: dict) -> str:
        self.spawned.append((app, function, payload))
        return f"fc-{len(self.spawned):04d}"

    def get(self, call_id: str):
        self.gets += 1
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        if item == "hang":
            threading.Event().wait(5)
        return item

    def cancel(self, call_id: str) -> None:
        self.cancelled.append(call_id)

    def call(self, app: str, function: str, payload: dict):
        self.calls.append((app, function, payload))
        if self.call_failures:
            raise self.call_failures.pop(0)
        return self.volume_file[payload["offset"]:payload["offset"] + payload["length"]]


def backend(caller, **kw) -> ModalTrainingBackend:
    return ModalTrainingBackend(caller, app="lora-training", function="train_lora", **kw)


def test_spawn_passes_the_spec_and_is_idempotent(tmp_path):
    caller = ScriptedCaller()
    first = backend(caller, state_path=tmp_path / "calls.json").submit_training(SPEC)
    again = backend(caller, state_path=tmp_path / "calls.json").submit_training(SPEC)  # another process, same file
    assert first == again == "fc-0001"
    assert caller.spawned == [("lora-training", "train_lora", SPEC.model_dump(mode="json"))]


def test_poll_maps_modal_outcomes():
    caller = ScriptedCaller(TimeoutError(), RESULT, OutputExpiredError("gone"), NotFoundError("no such call"),
                            ValueError("dataset has no faces"))
    b = backend(caller)
    assert b.poll("fc-1").state == "running"
    done = b.poll("fc-1")
    assert done.state == "succeeded" and done.result.object_key == RESULT["object_key"]
    expired = b.poll("fc-1")
    assert expired.state == "failed" and expired.error.startswith("expired")
    assert b.poll("fc-1").state == "lost"
    failed = b.poll("fc-1")
    assert failed.state == "failed" and "dataset has no faces" in failed.error


def test_transient_modal_errors_are_retried():
    caller = ScriptedCaller(ModalConnectionError("reset"), TimeoutError())
    b = backend(caller)
    b.attempts = 3
    assert b.poll("fc-1").state == "running"
    assert caller.gets == 2


def test_a_hanging_sdk_call_times_out():
    b = backend(ScriptedCaller("hang"), timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(GpuTimeoutError) as caught:
        b.poll("fc-9")
    assert time.monotonic() - started < 2 and caught.value.call_id == "fc-9" and caught.value.backend == "modal"


def test_cancel_goes_to_the_call():
    caller = ScriptedCaller()
    backend(caller).cancel("fc-7")
    assert caller.cancelled == ["fc-7"]


class ProgressCaller(ScriptedCaller):
    """A caller whose training app has written progress (modal_apps/training.py writes it to a modal.Dict)."""

    def __init__(self, *script, progress=None, fails=False) -> None:
        super().__init__(*script)
        self.value, self.fails = progress, fails

    def progress(self, call_id: str):
        if self.fails:
            raise RuntimeError("dict unavailable")
        return self.value


def test_a_running_call_reports_the_progress_the_training_app_wrote():
    assert backend(ProgressCaller(TimeoutError(), progress=42.5)).poll("fc-1").progress == 42.5
    unknown = backend(ProgressCaller(TimeoutError(), fails=True)).poll("fc-1")
    assert (unknown.state, unknown.progress) == ("running", None)
    assert backend(ScriptedCaller(TimeoutError())).poll("fc-1").progress is None


class HangingProgressCaller(ScriptedCaller):
    def progress(self, call_id: str):
        threading.Event().wait(5)  # a modal.Dict read that never answers
        return 50.0


def test_a_hanging_progress_read_does_not_hang_the_poll():
    b = backend(HangingProgressCaller(TimeoutError()), timeout_s=0.3)
    started = time.monotonic()
    polled = b.poll("fc-1")
    assert (polled.state, polled.progress) == ("running", None)
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- the volume copy, when the R2 upload failed

VOLUME_PATH = "/loras/loras/flux-character-7/41.safetensors"


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory) -> bytes:
    """A small real safetensors LoRA in FLUX's key layout (a few kB)."""
    rng = np.random.default_rng(7)
    tensors = {name: rng.standard_normal(shape).astype(np.float16)
               for name, shape in lora_tensor_shapes("flux", 4, scale_down=64).items()}
    path = tmp_path_factory.mktemp("lora") / "lora.safetensors"
    save_file(tensors, str(path), metadata={"lora_pipelines.base_model": "flux", "ss_base_model_version": "flux1"})
    return path.read_bytes()


def volume_only(body: bytes) -> TrainingResult:
    return TrainingResult(base_model="flux", trigger_word="jnfrstn", sha256=hashlib.sha256(body).hexdigest(),
                          size_bytes=len(body), volume_path=VOLUME_PATH,
                          upload_error="upload to the object store failed (EndpointConnectionError); "
                                       "the file is on the volume",
                          backend="modal")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_volume_only_result_is_read_through_read_lora_in_chunks(lora_bytes, tmp_path):
    caller = ScriptedCaller(volume_file=lora_bytes)
    dest = tmp_path / "out" / "41.safetensors"
    got = backend(caller, read_chunk_bytes=512).fetch_artifact(volume_only(lora_bytes), dest)

    assert got == dest and dest.read_bytes() == lora_bytes and leftovers(dest.parent) == ["41.safetensors"]
    assert inspect_lora_file(dest).base_model == "flux"
    offsets = [payload["offset"] for _, _, payload in caller.calls]
    assert offsets == list(range(0, len(lora_bytes) + 1, 512)) and len(offsets) > 2
    assert {(app, function, payload["volume_path"]) for app, function, payload in caller.calls} == {
        ("lora-training", "read_lora", VOLUME_PATH)}


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "longer"])
def test_wrong_bytes_from_the_volume_are_refused_and_leave_no_file(lora_bytes, tmp_path, damage):
    body = bytearray(lora_bytes)
    if damage == "flipped byte":
        body[len(body) // 2] ^= 0xFF
    elif damage == "truncated":
        del body[-100:]
    else:
        body += b"extra"
    dest = tmp_path / "41.safetensors"
    with pytest.raises(GpuPermanentError) as caught:
        backend(ScriptedCaller(volume_file=bytes(body)), read_chunk_bytes=1024).fetch_artifact(
            volume_only(lora_bytes), dest)
    message = str(caught.value)
    assert "read_lora" in message and VOLUME_PATH in message and caught.value.endpoint == "read_lora"
    assert ("sha256" in message) if damage == "flipped byte" else (f"says {len(lora_bytes)}" in message)
    assert leftovers(tmp_path) == []


def test_a_refusal_by_read_lora_is_permanent_and_a_dropped_connection_is_retried(lora_bytes, tmp_path):
    refused = ScriptedCaller(call_failures=[FileNotFoundError(f"no LoRA file at {VOLUME_PATH!r} on the volume")])
    with pytest.raises(GpuPermanentError, match="read_lora.*FileNotFoundError"):
        backend(refused).fetch_artifact(volume_only(lora_bytes), tmp_path / "a.safetensors")
    assert len(refused.calls) == 1 and leftovers(tmp_path) == []

    timed_out = ScriptedCaller(call_failures=[FunctionTimeoutError("read_lora timed out")])
    with pytest.raises(GpuTimeoutError, match="read_lora"):
        backend(timed_out).fetch_artifact(volume_only(lora_bytes), tmp_path / "a.safetensors")

    flaky = ScriptedCaller(volume_file=lora_bytes, call_failures=[ModalConnectionError("reset")])
    dest = backend(flaky, attempts=3).fetch_artifact(volume_only(lora_bytes), tmp_path / "b.safetensors")
    assert dest.read_bytes() == lora_bytes and len(flaky.calls) == 2


def test_a_read_that_returns_something_else_is_malformed(lora_bytes, tmp_path):
    class WrongType(ScriptedCaller):
        def call(self, app, function, payload):
            return {"data": "not bytes"}

    with pytest.raises(GpuMalformedResponseError, match="returned dict"):
        backend(WrongType()).fetch_artifact(volume_only(lora_bytes), tmp_path / "a.safetensors")
    assert leftovers(tmp_path) == []


def test_a_result_with_nowhere_to_fetch_from_is_refused(tmp_path):
    result = TrainingResult.model_validate({**RESULT, "object_key": None})
    with pytest.raises(GpuPermanentError, match="neither download_url nor volume_path"):
        backend(ScriptedCaller()).fetch_artifact(result, tmp_path / "a.safetensors")
