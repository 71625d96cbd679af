"""One HTTP call path for every GPU client: a timeout on each call, retries with backoff + jitter for
transient failures (connection errors, 429, 5xx, truncated bodies), none for refusals (4xx with a reason).
A 429 slows down every call of this process to that backend (gpu/limits.py), and is retried for as long as the
call's deadline allows rather than a fixed number of times."""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from lora_pipelines.gpu.errors import (
    GpuBackendError,
    GpuMalformedResponseError,
    GpuPermanentError,
    GpuTimeoutError,
    GpuTransientError,
    scrub,
)
from lora_pipelines.gpu.limits import throttle_gate

M = TypeVar("M", bound=BaseModel)

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
MAX_THROTTLED_ATTEMPTS = 60  # 429s one call sits out (the shared gate paces them) before giving up


class RetryingHttp:
    """httpx with the GPU-call policy. `backend` names the service in every error it raises."""

    def __init__(self, backend: str, base_url: str, *, timeout_s: float = 120.0,
                 headers: Mapping[str, str] | None = None,
                 secrets: Iterable[str | None] = (), attempts: int = 4, backoff_initial_s: float = 0.2,
                 backoff_max_s: float = 5.0, transport: httpx.BaseTransport | None = None,
                 throttle_key: str | None = None) -> None:
        self.backend = backend
        self.base_url = base_url.rstrip("/")
        # one backoff for every client of this backend in the process (`throttle_key`: the service's base URL)
        self.gate = throttle_gate(f"{backend}|{throttle_key or self.base_url}")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._secrets = [s for s in secrets if s]
        # `headers` are credentials for this service (Modal-Key / Modal-Secret): httpx would forward them on a
        # redirect to another host (it strips only Authorization), so redirects are followed here instead.
        self._credential_headers = list(headers or {})
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=dict(headers or {}), transport=transport,
                                    follow_redirects=False)
        # a client dropped without close() (a cached context replaced, say) still closes its connections
        self._close = weakref.finalize(self, self._client.close)

    def close(self) -> None:
        self._close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, endpoint: str | None = None, call_id: str | None = None,
                timeout_s: float | None = None, ok_statuses: Iterable[int] = (), **kwargs: Any) -> httpx.Response:
        """Send with retries; returns a 2xx response (or one whose status is in `ok_statuses`), body read in full."""
        endpoint = endpoint or path
        timeout = timeout_s or self.timeout_s
        accepted = set(ok_statuses)

        failures = {"throttled": 0, "other": 0}

        def once() -> httpx.Response:
            with self.gate.permit() as permit:
                try:
                    response = self._send(method, self.url(path), endpoint, timeout=timeout, **kwargs)
                except httpx.TimeoutException as exc:
                    failures["other"] += 1
                    raise GpuTimeoutError(f"no answer within {timeout:g}s ({type(exc).__name__})",
                                          backend=self.backend, endpoint=endpoint, call_id=call_id) from None
                except httpx.TransportError as exc:  # refused connection, reset, body cut short
                    failures["other"] += 1
                    raise GpuTransientError(self._clean(f"{type(exc).__name__}: {exc}"), backend=self.backend,
                                            endpoint=endpoint, call_id=call_id) from None
                permit.answered(response.status_code, _retry_after_header(response))
            if response.is_success or response.status_code in accepted:
                return response
            reason = self._clean(_reason(response))
            transient = response.status_code in TRANSIENT_STATUS
            failures["throttled" if response.status_code == 429 else "other"] += transient
            kind = GpuTransientError if transient else GpuPermanentError
            raise kind(reason, backend=self.backend, endpoint=endpoint, call_id=call_id,
                       status_code=response.status_code, detail=self._clean_detail(_json_or_none(response)))

        deadline = max(timeout * self.attempts, timeout + 30.0)

        def give_up(state: RetryCallState) -> bool:
            return (failures["other"] >= self.attempts or failures["throttled"] >= MAX_THROTTLED_ATTEMPTS
                    or state.seconds_since_start >= deadline)

        backoff = wait_exponential_jitter(multiplier=self.backoff_initial_s, max=self.backoff_max_s,
                                          jitter=self.backoff_initial_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return 0.0 if getattr(exc, "status_code", None) == 429 else backoff(state)  # the gate paces 429s

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, GpuTransientError)),
            stop=give_up,
            wait=wait,
            before_sleep=_honour_retry_after,
            reraise=True,
        )
        return retrying(once)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request` + a JSON body; a body that does not parse is treated as cut short (transient) and retried."""
        endpoint, call_id = kwargs.get("endpoint") or path, kwargs.get("call_id")
        retrying = Retrying(retry=retry_if_exception(lambda e: isinstance(e, _Truncated)),
                            stop=stop_after_attempt(self.attempts),
                            wait=wait_exponential_jitter(multiplier=self.backoff_initial_s, max=self.backoff_max_s),
                            reraise=True)
        try:
            return retrying(lambda: _parse_json(self.request(method, path, **kwargs)))
        except _Truncated as exc:
            raise GpuTransientError(f"response body is not complete JSON ({exc})", backend=self.backend,
                                    endpoint=endpoint, call_id=call_id) from None

    def parse(self, model: type[M], data: Any, *, endpoint: str, call_id: str | None = None) -> M:
        """`data` as `model`, or GpuMalformedResponseError naming the first field that does not fit."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the body"
            raise GpuMalformedResponseError(f"malformed response: {model.__name__} {where}: {first['msg']}",
                                            backend=self.backend, endpoint=endpoint, call_id=call_id) from None

    def _send(self, method: str, url: str, endpoint: str, **kwargs: Any) -> httpx.Response:
        """One request, following redirects (Modal answers a slow endpoint with a 303 to its result URL);
        the credential headers go only to the origin they were configured for."""
        response = self._client.request(method, url, **kwargs)
        response.read()
        origin = response.request.url
        for _ in range(MAX_REDIRECTS):
            following = response.next_request
            if following is None:
                return response
            target = (following.url.scheme, following.url.host, following.url.port)
            if target != (origin.scheme, origin.host, origin.port):
                for name in self._credential_headers:
                    following.headers.pop(name, None)
            response = self._client.send(following)
            response.read()
        raise GpuPermanentError(f"more than {MAX_REDIRECTS} redirects", backend=self.backend, endpoint=endpoint)

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _clean_detail(self, body: Any) -> Any:
        """The response body kept on the error, with any secret a server echoed back scrubbed out."""
        if body is None:
            return None
        return json.loads(self._clean(json.dumps(body)))


class _Truncated(Exception):
    pass


def _parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Truncated(f"{len(response.content)} bytes, {exc.msg if hasattr(exc, 'msg') else exc}") from None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reason(response: httpx.Response) -> str:
    body = _json_or_none(response)
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value)[:300]
            if value:
                text = value if isinstance(value, str) else json.dumps(value)[:300]
                if key == "error" and isinstance(body.get("detail"), str):
                    text += f": {body['detail']}"
                return text
    return response.text[:300] or response.reason_phrase


def _retry_after_header(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the HTTP-date form is ignored), capped at a minute."""
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(value, 0.0), 60.0)


def _honour_retry_after(state: RetryCallState) -> None:
    """Sleep a little extra when a 429/503 asked for it (bounded; tenacity's own wait still applies)."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, GpuBackendError) and isinstance(exc.detail, dict):
        wait = exc.detail.get("retry_after_s")
        if isinstance(wait, (int, float)) and 0 < wait <= 10:
            time.sleep(wait)
