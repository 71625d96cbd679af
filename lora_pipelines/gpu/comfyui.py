"""A ComfyUI server (a pod, or the simulated one): queue an API-format workflow, wait for it, fetch its images."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from lora_pipelines.gpu.errors import GpuPermanentError, GpuTimeoutError
from lora_pipelines.gpu.http import RetryingHttp


class UnknownNodeTypeError(GpuPermanentError):
    """The workflow uses node classes the server does not have (a missing custom node pack)."""


def _node_errors_summary(body: Any) -> str:
    if not isinstance(body, dict):
        return "prompt refused"
    error = body.get("error") or {}
    parts = [error.get("message", "prompt refused") if isinstance(error, dict) else str(error)]
    if isinstance(error, dict) and error.get("details"):
        parts[0] += f" ({error['details']})"
    for node_id, entry in (body.get("node_errors") or {}).items():
        for err in entry.get("errors", []):
            parts.append(f"node {node_id} ({entry.get('class_type')}): {err.get('type')}: {err.get('details')}")
    return "; ".join(parts)


class ComfyUIClient:
    def __init__(self, base_url: str, *, timeout_s: float = 60.0, attempts: int = 4, name: str = "comfyui") -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.http = RetryingHttp(name, self.base_url, timeout_s=timeout_s, attempts=attempts)
        self.client_id = uuid.uuid4().hex
        self._object_info: dict[str, Any] | None = None

    def object_info(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._object_info is None or refresh:
            self._object_info = self.http.json("GET", "/object_info", endpoint="/object_info")
        return self._object_info

    def check_node_types(self, workflow: Mapping[str, Any]) -> None:
        """Refuse, before queueing, a workflow whose node classes the server does not know."""
        known = self.object_info()
        missing = sorted({str(node.get("class_type")) for node in workflow.values()
                          if isinstance(node, Mapping) and node.get("class_type") not in known})
        if missing:
            raise UnknownNodeTypeError(f"node types not installed on the server: {', '.join(missing)}",
                                       backend=self.name, endpoint="/object_info")

    def list_loras(self) -> list[str]:
        return list(self.http.json("GET", "/models/loras", endpoint="/models/loras"))

    def upload_image(self, data: bytes, filename: str) -> str:
        """Put a reference image into the server's input/ folder (for LoadImage); returns the stored name."""
        body = self.http.json("POST", "/upload/image", endpoint="/upload/image",
                              files={"image": (filename, data, "image/png")}, data={"overwrite": "true"})
        return str(body["name"])

    def queue_prompt(self, workflow: Mapping[str, Any]) -> str:
        self.check_node_types(workflow)
        response = self.http.request("POST", "/prompt", endpoint="/prompt", json={"prompt": dict(workflow),
                                                                                   "client_id": self.client_id},
                                     ok_statuses=(400,))
        body = response.json()
        if response.status_code == 400:
            raise GpuPermanentError(_node_errors_summary(body), backend=self.name, endpoint="/prompt",
                                    status_code=400, detail=body)
        return str(body["prompt_id"])

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        body = self.http.json("GET", f"/history/{prompt_id}", endpoint="/history", call_id=prompt_id)
        return body.get(prompt_id) if isinstance(body, dict) else None

    def wait(self, prompt_id: str, timeout_s: float, poll_interval: float = 0.25) -> dict[str, Any]:
        """The history entry once the prompt finished; GpuTimeoutError after `timeout_s`, GpuPermanentError when
        execution failed (with the node and exception ComfyUI reported)."""
        deadline = time.monotonic() + timeout_s
        while True:
            entry = self.history(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("status_str") == "error":
                failure = next((m[1] for m in status.get("messages", []) if m and m[0] == "execution_error"), {})
                raise GpuPermanentError(
                    f"execution failed at node {failure.get('node_id')} ({failure.get('node_type')}): "
                    f"{failure.get('exception_message', 'unknown error')}".strip(),
                    backend=self.name, endpoint="/history", call_id=prompt_id, detail=entry)
            if status.get("completed"):
                return entry
            if time.monotonic() >= deadline:
                raise GpuTimeoutError(f"prompt not finished after {timeout_s:g}s", backend=self.name,
                                      endpoint="/history", call_id=prompt_id)
            time.sleep(poll_interval)

    def fetch_outputs(self, prompt_id: str) -> list[bytes]:
        entry = self.history(prompt_id) or {}
        images = []
        for node_id in sorted(entry.get("outputs", {}), key=lambda n: (len(n), n)):
            for image in entry["outputs"][node_id].get("images", []):
                params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                          "type": image.get("type", "output")}
                images.append(self.http.request("GET", "/view", endpoint="/view", call_id=prompt_id, params=params).content)
        return images

    def run(self, workflow: Mapping[str, Any], timeout_s: float) -> tuple[str, list[bytes]]:
        """Queue, wait, fetch: (prompt id, PNG bytes of every output image)."""
        prompt_id = self.queue_prompt(workflow)
        self.wait(prompt_id, timeout_s)
        return prompt_id, self.fetch_outputs(prompt_id)

    def close(self) -> None:
        self.http.close()
