"""Training on Modal: `Function.from_name(app, name).spawn(spec)` → FunctionCall id, polled with `get(timeout=0)`.

A result whose upload to R2 failed is only on the training app's volume: `fetch_artifact` then reads it in chunks
through the app's `read_lora` function and checks size and sha256 before the file appears at its destination.

The Modal SDK sits behind `FunctionCaller` (our interface, four calls) so the backend's logic is tested with a
stand-in caller; `ModalFunctionCaller` is the real one and imports modal only when used.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from lora_pipelines.gpu.downloads import download_verified
from lora_pipelines.gpu.errors import (
    GpuBackendError,
    GpuMalformedResponseError,
    GpuPermanentError,
    GpuTimeoutError,
    GpuTransientError,
)
from lora_pipelines.gpu.http import RetryingHttp
from lora_pipelines.gpu.schemas import TrainingPoll, TrainingResult, TrainingSpec
from lora_pipelines.store.objects.files import atomic_write, sha256_of_chunks

T = TypeVar("T")


class FunctionCaller(Protocol):
    """The Modal operations training needs."""

    def spawn(self, app: str, function: str, payload: dict[str, Any]) -> str:
        """Start the function; return the FunctionCall id (`fc-...`)."""

    def get(self, call_id: str) -> Any:
        """The call's return value; raises builtin TimeoutError while it runs, OutputExpiredError when expired,
        NotFoundError when unknown, or the remote exception when the function failed."""

    def cancel(self, call_id: str) -> None: ...

    def call(self, app: str, function: str, payload: dict[str, Any]) -> Any:
        """Run the function with `payload` as keyword arguments and wait for its return value."""


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

    def call(self, app: str, function: str, payload: dict[str, Any]) -> Any:
        import modal

        return modal.Function.from_name(app, function).remote(**payload)

    def progress(self, call_id: str) -> float | None:
        """The percentage the training app writes to its modal.Dict (modal_apps/training.py PROGRESS_DICT)."""
        import modal

        entry = modal.Dict.from_name(PROGRESS_DICT).get(call_id)
        return float(entry["progress"]) if isinstance(entry, dict) and "progress" in entry else None


def _names(exc: BaseException) -> set[str]:
    return {klass.__name__ for klass in type(exc).__mro__}


PROGRESS_DICT = "lora-training-progress"
READ_FUNCTION = "read_lora"  # modal_apps/training.py READ_FUNCTION_NAME
REMOVE_FUNCTION = "remove_lora"  # modal_apps/training.py REMOVE_FUNCTION_NAME
READ_CHUNK_BYTES = 32 * 1024 * 1024  # at most modal_apps.artifacts.MAX_READ_BYTES (64 MiB)

# Modal's exceptions by class name, so this module works (and is tested) without importing modal.
_TRANSIENT = {"ConnectionError", "InternalError", "ResourceExhaustedError", "ServiceError"}


class ModalTrainingBackend:
    name = "modal"

    def __init__(self, caller: FunctionCaller, *, app: str, function: str, state_path: Path | None = None,
                 timeout_s: float = 60.0, attempts: int = 3, read_function: str = READ_FUNCTION,
                 read_chunk_bytes: int = READ_CHUNK_BYTES, read_timeout_s: float | None = None) -> None:
        if not 0 < read_chunk_bytes <= 64 * 1024 * 1024:
            raise ValueError(f"read_chunk_bytes must be in 1..{64 * 1024 * 1024}, got {read_chunk_bytes}")
        self.caller, self.app, self.function = caller, app, function
        self.state_path = state_path
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.read_function, self.read_chunk_bytes = read_function, read_chunk_bytes
        # A read may start a container and move a chunk through Modal's blob store: more than a spawn or a poll.
        self.read_timeout_s = read_timeout_s if read_timeout_s is not None else max(timeout_s, 120.0)
        self._calls: dict[str, str] = {}  # idempotency key -> call id (also on disk when state_path is set)

    # --- TrainingBackend ---
    def submit_training(self, spec: TrainingSpec) -> str:
        with self._keys() as calls:
            if spec.idempotency_key in calls:
                return calls[spec.idempotency_key]
            call_id = self._call("spawn", None,
                                 lambda: self.caller.spawn(self.app, self.function, spec.model_dump(mode="json")))
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
                return TrainingPoll(call_id=call_id, state="failed",
                                    error="expired: the call's results are no longer kept by Modal")
            if "NotFoundError" in names:
                return TrainingPoll(call_id=call_id, state="lost", error=f"Modal does not know call {call_id}")
            return TrainingPoll(call_id=call_id, state="failed",
                                error=f"training function raised {type(exc).__name__}: {exc}")
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
        """From `download_url` when there is one, else from the volume copy (`volume_path`) through `read_lora`."""
        if not result.download_url:
            if result.volume_path:
                return self._fetch_from_volume(result, Path(dest_path))
            raise GpuPermanentError("result has neither download_url nor volume_path; fetch result.object_key from "
                                    "the object store", backend=self.name, endpoint="fetch_artifact")
        http = RetryingHttp(self.name, "", timeout_s=max(self.timeout_s, 120.0))
        try:
            return download_verified(http, result.download_url, dest_path, result.sha256, endpoint="fetch_artifact")
        finally:
            http.close()

    def remove_trained_files(self, call_id: str | None, keys: list[str]) -> list[str]:
        """Delete the LoRA's copies on the training app's volume (kept there at their object keys) through the app's
        `remove_lora` function; returns the keys that were there."""
        if not keys:
            return []
        try:
            removed = self._call(REMOVE_FUNCTION, call_id,
                                 lambda: self.caller.call(self.app, REMOVE_FUNCTION, {"keys": list(keys)}))
        except GpuBackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - the remote refusal (a bad key) or an SDK error
            raise GpuPermanentError(f"{self.app}.{REMOVE_FUNCTION} raised {type(exc).__name__}: {str(exc)[:300]}",
                                    backend=self.name, endpoint=REMOVE_FUNCTION) from None
        if not isinstance(removed, list) or not all(isinstance(k, str) for k in removed):
            raise GpuMalformedResponseError(f"{self.app}.{REMOVE_FUNCTION} returned {type(removed).__name__}, "
                                            "expected a list of keys", backend=self.name, endpoint=REMOVE_FUNCTION)
        return removed

    # --- helpers ---
    def _fetch_from_volume(self, result: TrainingResult, dest: Path) -> Path:
        """Chunks into a temp file next to `dest`; renamed to `dest` only when size and sha256 match the result."""
        where = f"{self.app}.{self.read_function}({result.volume_path!r})"

        def chunks() -> Iterator[bytes]:
            received = 0
            while received <= result.size_bytes:
                # One byte past the expected end too: a longer file on the volume is not the trained one.
                length = min(self.read_chunk_bytes, result.size_bytes - received + 1)
                chunk = self._read_chunk(where, result.volume_path, received, length)
                yield chunk
                received += len(chunk)
                if len(chunk) < length:
                    return

        with atomic_write(dest) as fh:
            digest = sha256_of_chunks(chunks(), sink=fh)
            received = fh.tell()
            if received != result.size_bytes:
                raise GpuPermanentError(f"{where} gave {received} bytes, the training result says {result.size_bytes}",
                                        backend=self.name, endpoint=self.read_function)
            if digest != result.sha256:
                raise GpuPermanentError(f"{where} gave bytes with sha256 {digest[:12]}…, the training "
                                        f"result says {result.sha256[:12]}…", backend=self.name,
                                        endpoint=self.read_function)
        return dest

    def _read_chunk(self, where: str, volume_path: str, offset: int, length: int) -> bytes:
        payload = {"volume_path": volume_path, "offset": offset, "length": length}
        try:
            value = self._call(self.read_function, None,
                               lambda: self.caller.call(self.app, self.read_function, payload),
                               timeout_s=self.read_timeout_s)
        except GpuBackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - the remote refusal (bad path, missing file) or an SDK error
            if "TimeoutError" in _names(exc):  # modal's FunctionTimeoutError: the read function ran out of time
                raise GpuTimeoutError(f"{where} at offset {offset} timed out ({type(exc).__name__})",
                                      backend=self.name, endpoint=self.read_function) from None
            raise GpuPermanentError(f"{where} at offset {offset} raised {type(exc).__name__}: {str(exc)[:300]}",
                                    backend=self.name, endpoint=self.read_function) from None
        if not isinstance(value, (bytes, bytearray)) or len(value) > length:
            got = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__
            raise GpuMalformedResponseError(
                f"{where} at offset {offset} returned {got}; expected at most {length} bytes",
                backend=self.name, endpoint=self.read_function)
        return bytes(value)

    def _finished(self, call_id: str, value: Any) -> TrainingPoll:
        if isinstance(value, dict) and value.get("error") and "sha256" not in value:
            return TrainingPoll(call_id=call_id, state="failed", error=str(value["error"]))
        try:
            result = TrainingResult.model_validate(value)
        except ValidationError as exc:
            return TrainingPoll(call_id=call_id, state="failed",
                                error=f"training returned an unexpected value: {exc.errors()[0]['msg']}")
        return TrainingPoll(call_id=call_id, state="succeeded", progress=100.0, result=result)

    def _call(self, endpoint: str, call_id: str | None, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """Run one SDK call with a timeout; retry Modal's transient errors (connection, internal, exhausted)."""
        return Retrying(retry=retry_if_exception_type(GpuTransientError), stop=stop_after_attempt(self.attempts),
                        wait=wait_exponential_jitter(multiplier=0.5, max=8.0), reraise=True)(
            lambda: self._bounded(endpoint, call_id, fn, timeout_s=timeout_s))

    def _bounded(self, endpoint: str, call_id: str | None, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """One SDK call, given up after `timeout_s` (default: the backend's); Modal's transient errors become
        GpuTransientError."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(fn)
        try:
            return future.result(timeout=timeout_s)
        except Exception as exc:
            if not future.done():  # (the SDK's own builtin TimeoutError means "still running": passed on)
                raise GpuTimeoutError(f"no answer within {timeout_s:g}s", backend=self.name,
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
        with atomic_write(self.path) as fh:
            fh.write(json.dumps(self.memory).encode())
        self._lock.close()
