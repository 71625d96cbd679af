"""Errors of every GPU backend. Each says which backend, which endpoint and which call; never a secret."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret value replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class GpuBackendError(RuntimeError):
    """A GPU backend call went wrong; `backend`, `endpoint` and `call_id` say where."""

    retryable = False

    def __init__(self, message: str, *, backend: str, endpoint: str | None = None, call_id: str | None = None,
                 status_code: int | None = None, detail: Any = None) -> None:
        self.message = message
        self.backend = backend
        self.endpoint = endpoint
        self.call_id = call_id
        self.status_code = status_code
        self.detail = detail
        where = backend + (f" {endpoint}" if endpoint else "") + (f" (call {call_id})" if call_id else "")
        status = f" HTTP {status_code}" if status_code else ""
        super().__init__(f"{where}:{status} {message}")


class GpuTransientError(GpuBackendError):
    """Connection errors, 429 and 5xx: worth retrying (and already retried when raised by a client)."""

    retryable = True


class GpuPermanentError(GpuBackendError):
    """The backend refused the request with a reason (4xx); retrying the same request cannot help."""

    @property
    def node_errors(self) -> dict[str, Any]:
        """ComfyUI's per-node validation errors, when the refusal came from `POST /prompt`."""
        if isinstance(self.detail, dict):
            return self.detail.get("node_errors") or {}
        return {}


class GpuMalformedResponseError(GpuPermanentError):
    """The backend answered 2xx, but not in the shape its API promises (a field missing or of the wrong type)."""


class GpuTimeoutError(GpuBackendError):
    """No answer within the configured timeout."""


class GpuCallLostError(GpuBackendError):
    """The backend no longer knows a call it accepted (expired results, restarted worker)."""
