"""Downloading a trained LoRA: temp file, sha256 check, atomic rename; a short or corrupt body is retried."""

from __future__ import annotations

from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from lora_pipelines.gpu.errors import GpuTransientError
from lora_pipelines.gpu.http import RetryingHttp
from lora_pipelines.store.objects.files import atomic_write, sha256_of_bytes


def download_verified(http: RetryingHttp, url: str, dest: Path, sha256: str | None, *, endpoint: str = "download",
                      call_id: str | None = None, attempts: int = 3) -> Path:
    """GET `url` into `dest` (atomically); when `sha256` is given a mismatching body is retried, then refused."""
    dest = Path(dest)

    def once() -> Path:
        body = http.request("GET", url, endpoint=endpoint, call_id=call_id).content
        digest = sha256_of_bytes(body)
        if sha256 and digest != sha256:
            raise GpuTransientError(f"downloaded {len(body)} bytes with sha256 {digest[:12]}…, expected {sha256[:12]}…",
                                    backend=http.backend, endpoint=endpoint, call_id=call_id)
        with atomic_write(dest) as fh:
            fh.write(body)
        return dest

    return Retrying(retry=retry_if_exception_type(GpuTransientError), stop=stop_after_attempt(attempts),
                    wait=wait_exponential_jitter(multiplier=0.2, max=2.0), reraise=True)(once)
