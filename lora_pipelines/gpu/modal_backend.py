"""Training on Modal: `Function.from_name(app, name).spawn(spec)` → FunctionCall id, polled with `get(timeout=0)`.

The Modal SDK sits behind `FunctionCaller` (our interface, three calls) so the backend's logic is tested with a
stand-in caller; `ModalFunctionCaller` is the real one and imports modal only when used.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from lora_pipelines.gpu.downloads import download_verified
from lora_pipelines.gpu.errors import GpuPermanentError, GpuTimeoutError, GpuTransientError
from lora_pipelines.gpu.http import RetryingHttp
from lora_pipelines.gpu.schemas import TrainingPoll, TrainingResult, TrainingSpec

T = TypeVar("T")


class FunctionCaller(Protocol):
    """The three Modal operations training needs."""

    def spawn(self, app: str, function: str, payload: dict[str, Any]) -> str:
        """Start the function; return the FunctionCall id (`fc-...`)."""

    def get(self, call_id: str) -> Any:
        """The call's return value; raises builtin TimeoutError while it runs, OutputExpiredError when expired,
        NotFoundError when unknown, or the remote exception when the function failed."""

    def cancel(self, call_id: str) -> None: ...


class ModalFunctionCaller:
    """The real Modal SDK (needs `pip install modal` and MODAL_TOKEN_ID/SECRET in the environment)."""

    def spawn(self, app: str, function: str, payload: dict[str, Any]) -> str:
        import modal

        return modal.Function.from_name(app, function).spawn(payload).object_id

    def get(self, call_id: str) -> Any:
        import modal

        return modal.FunctionCall.from_id(call_id).get(timeout=0)

    def cancel(self, call_id: str) -> None:
        import modal

        modal.FunctionCall.from_id(call_id).cancel()

    def progress(self, call_id: str) -> float | None:
        """The percentage the training app writes to its modal.Dict (modal_apps/training.py PROGRESS_DICT)."""
        import modal

        entry = modal.Dict.from_name(PROGRESS_DICT).get(call_id)
        return float(entry["progress"]) if isinstance(entry, dict) and "progress" in entry else None


def _names(exc: BaseException) -> set[str]:
    return {klass.__name__ for klass in type(exc).__mro__}


PROGRESS_DICT = "lora-training-progress"

# Modal's exceptions by class name, so this module works (and is tested) without importing modal.
_TRANSIENT = {"ConnectionError", "InternalError", "ResourceExhaustedError", "ServiceError"}


class ModalTrainingBackend:
    name = "modal"

    def __init__(self, caller: FunctionCaller, *, app: str, function: str, state_path: Path | None = None,
                 timeout_s: float = 60.0, attempts: int = 3) -> None:
        self.caller, self.app, self.function = caller, app, function
        self.state_path = state_path
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._calls: dict[str, str] = {}  # idempotency key -> call id (also on disk when state_path is set)

    # --- TrainingBackend ---
    def submit_training(self, spec: TrainingSpec) -> str:
        with self._keys() as calls:
            if spec.idempotency_key in calls:
                return calls[spec.idempotency_key]
            call_id = self._call("spawn", None, lambda: self.caller.spawn(self.app, self.function, spec.model_dump(mode="json")))
            calls[spec.idempotency_key] = call_id
            return call_id

    def poll(self, call_id: str) -> TrainingPoll:
        try:
            value = self._call("poll", call_id, lambda: self.caller.get(call_id))
        except TimeoutError:
            return TrainingPoll(call_id=call_id, state="running", progress=self._progress(call_id))
        except (GpuTransientError, GpuTimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below by Modal's exception names
            names = _names(exc)
            if "OutputExpiredError" in names:
                return TrainingPoll(call_id=call_id, state="failed", error="expired: the call's results are no longer kept by Modal")
            if "NotFoundError" in names:
                return TrainingPoll(call_id=call_id, state="lost", error=f"Modal does not know call {call_id}")
            return TrainingPoll(call_id=call_id, state="failed", error=f"training function raised {type(exc).__name__}: {exc}")
        return self._finished(call_id, value)

    def cancel(self, call_id: str) -> None:
        self._call("cancel", call_id, lambda: self.caller.cancel(call_id))

    def _progress(self, call_id: str) -> float | None:
        """Advisory: a caller without progress, or any failure reading it, just means no percentage."""
        reader = getattr(self.caller, "progress", None)
        if reader is None:
            return None
        try:  # bounded like every SDK call: a hanging modal.Dict read must not hang the poll
            value = self._bounded("progress", call_id, lambda: reader(call_id))
        except Exception:  # noqa: BLE001
            return None
        return None if value is None else min(max(value, 0.0), 100.0)

    def fetch_artifact(self, result: TrainingResult, dest_path: Path) -> Path:
        if not result.download_url:
            raise GpuPermanentError("result has no download_url; fetch result.object_key from the object store",
                                    backend=self.name, endpoint="fetch_artifact")
        http = RetryingHttp(self.name, "", timeout_s=max(self.timeout_s, 120.0))
        try:
            return download_verified(http, result.download_url, dest_path, result.sha256, endpoint="fetch_artifact")
        finally:
            http.close()

    # --- helpers ---
    def _finished(self, call_id: str, value: Any) -> TrainingPoll:
        if isinstance(value, dict) and value.get("error") and "sha256" not in value:
            return TrainingPoll(call_id=call_id, state="failed", error=str(value["error"]))
        try:
            result = TrainingResult.model_validate(value)
        except ValidationError as exc:
            return TrainingPoll(call_id=call_id, state="failed",
                                error=f"training returned an unexpected value: {exc.errors()[0]['msg']}")
        return TrainingPoll(call_id=call_id, state="succeeded", progress=100.0, result=result)

    def _call(self, endpoint: str, call_id: str | None, fn: Callable[[], T]) -> T:
        """Run one SDK call with a timeout; retry Modal's transient errors (connection, internal, exhausted)."""
        return Retrying(retry=retry_if_exception_type(GpuTransientError), stop=stop_after_attempt(self.attempts),
                        wait=wait_exponential_jitter(initial=0.5, max=8.0), reraise=True)(
            lambda: self._bounded(endpoint, call_id, fn))

    def _bounded(self, endpoint: str, call_id: str | None, fn: Callable[[], T]) -> T:
        """One SDK call, given up after `timeout_s`; Modal's transient errors become GpuTransientError."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(fn)
        try:
            return future.result(timeout=self.timeout_s)
        except Exception as exc:
            if not future.done():  # (the SDK's own builtin TimeoutError means "still running": passed on)
                raise GpuTimeoutError(f"no answer within {self.timeout_s:g}s", backend=self.name,
                                      endpoint=endpoint, call_id=call_id) from None
            if _names(exc) & _TRANSIENT and not isinstance(exc, TimeoutError):
                raise GpuTransientError(f"{type(exc).__name__}: {exc}", backend=self.name, endpoint=endpoint,
                                        call_id=call_id) from None
            raise
        finally:
            pool.shutdown(wait=False)

    def _keys(self) -> _KeyStore:
        return _KeyStore(self._calls, self.state_path)


class _KeyStore:
    """The idempotency map, locked and persisted when it has a file (so another process sees the same call)."""

    def __init__(self, memory: dict[str, str], path: Path | None) -> None:
        self.memory, self.path = memory, path
        self._lock = None

    def __enter__(self) -> dict[str, str]:
        if self.path is None:
            return self.memory
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_suffix(".lock"), "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        if self.path.exists():
            self.memory.update(json.loads(self.path.read_text() or "{}"))
        return self.memory

    def __exit__(self, *exc: object) -> None:
        if self._lock is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.memory))
        tmp.replace(self.path)
        self._lock.close()
