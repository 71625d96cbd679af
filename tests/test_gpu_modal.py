"""The Modal training backend behind our FunctionCaller seam, driven by a stand-in caller (not a fake Modal
client: the seam is our own three-call interface), and the Modal endpoints client against the simulated routes."""

from __future__ import annotations

import threading
import time

import pytest
from modal.exception import ConnectionError as ModalConnectionError
from modal.exception import NotFoundError, OutputExpiredError

from lora_pipelines.gpu.errors import GpuTimeoutError
from lora_pipelines.gpu.modal_backend import ModalTrainingBackend
from lora_pipelines.gpu.schemas import TrainingSpec

SPEC = TrainingSpec(character_id="7", lora_model_id="41", base_model="flux", dataset_url="https://r2.example/d.zip",
                    dataset_sha256="a" * 64, trigger_word="jnfrstn", output_key="loras/flux-character-7/41.safetensors",
                    idempotency_key="7:flux:abc:attempt1")
RESULT = {"base_model": "flux", "trigger_word": "jnfrstn", "sha256": "b" * 64, "size_bytes": 123,
          "object_key": "loras/flux-character-7/41.safetensors", "backend": "modal"}


class ScriptedCaller:
    """Answers `get` from a script: each item is a value to return or an exception to raise."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.spawned: list[tuple[str, str, dict]] = []
        self.cancelled: list[str] = []
        self.gets = 0

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
