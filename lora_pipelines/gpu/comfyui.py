"""A ComfyUI server (a pod, or the simulated one): queue an API-format workflow, wait for it, fetch its images."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from lora_pipelines.gpu.errors import GpuMalformedResponseError, GpuPermanentError, GpuTimeoutError
from lora_pipelines.gpu.http import RetryingHttp


class UnknownNodeTypeError(GpuPermanentError):
    """The workflow uses node classes the server does not have (a missing custom node pack)."""


class LoraNotOnPodError(GpuPermanentError):
    """The workflow loads a LoRA file the server's models/loras folder does not list."""


def _node_errors_summary(body: Any) -> str:
    if not isinstance(body, dict):
        return "prompt refused"
    error = body.get("error") or {}
    parts = [str(error.get("message", "prompt refused")) if isinstance(error, dict) else str(error)]
    if isinstance(error, dict) and error.get("details"):
        parts[0] += f" ({error['details']})"
    node_errors = body.get("node_errors")
    for node_id, entry in (node_errors.items() if isinstance(node_errors, dict) else ()):
        errors = entry.get("errors") if isinstance(entry, dict) else None
        for err in errors if isinstance(errors, list) else [entry]:
            err = err if isinstance(err, dict) else {"details": err}
            class_type = entry.get("class_type") if isinstance(entry, dict) else None
            parts.append(f"node {node_id} ({class_type}): {err.get('type')}: {err.get('details')}")
    return "; ".join(parts)[:2000]


_PROMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")  # it goes into /history/{id}: no '/', '?' or '..' games


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


class ComfyUIClient:
    def __init__(self, base_url: str, *, timeout_s: float = 60.0, attempts: int = 4, name: str = "comfyui") -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.http = RetryingHttp(name, self.base_url, timeout_s=timeout_s, attempts=attempts)
        self.client_id = uuid.uuid4().hex
        self._object_info: dict[str, Any] | None = None

    def _malformed(self, endpoint: str, what: str, call_id: str | None = None) -> GpuMalformedResponseError:
        return GpuMalformedResponseError(f"malformed response: {what}", backend=self.name, endpoint=endpoint,
                                         call_id=call_id)

    def _object(self, value: Any, endpoint: str, what: str, call_id: str | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._malformed(endpoint, f"{what} is a JSON {_kind(value)}, expected an object", call_id)
        return value

    def _field(self, body: dict[str, Any], field: str, kind: type, endpoint: str, call_id: str | None = None) -> Any:
        if field not in body:
            raise self._malformed(endpoint, f"field {field!r} is missing", call_id)
        value = body[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self._malformed(endpoint, f"field {field!r} is a JSON {_kind(value)}, expected {_kind(kind())}",
                                  call_id)
        return value

    def object_info(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._object_info is None or refresh:
            body = self.http.json("GET", "/object_info", endpoint="/object_info")
            self._object_info = self._object(body, "/object_info", "the node type map")
        return self._object_info

    def check_node_types(self, workflow: Mapping[str, Any]) -> None:
        """Refuse, before queueing, a workflow whose node classes the server does not know."""
        known = self.object_info()
        missing = sorted({str(node.get("class_type")) for node in workflow.values()
                          if isinstance(node, Mapping) and node.get("class_type") not in known})
        if missing:
            raise UnknownNodeTypeError(f"node types not installed on the server: {', '.join(missing)}",
                                       backend=self.name, endpoint="/object_info")

    def check_loras_present(self, workflow: Mapping[str, Any]) -> None:
        """Refuse, before queueing, a workflow whose LoRA loaders name a file `/models/loras` does not list."""
        wanted = sorted({str(node.get("inputs", {}).get("lora_name")) for node in workflow.values()
                         if isinstance(node, Mapping)
                         and node.get("class_type") in ("LoraLoader", "LoraLoaderModelOnly")})
        if not wanted:
            return
        missing = sorted(set(wanted) - set(self.list_loras()))
        if missing:
            raise LoraNotOnPodError(f"LoRA files not in the server's models/loras: {', '.join(missing)}",
                                    backend=self.name, endpoint="/models/loras")

    def preflight(self, workflow: Mapping[str, Any]) -> None:
        """What to check before `POST /prompt`: node types (`/object_info`) and LoRA files (`/models/loras`)."""
        self.check_node_types(workflow)
        self.check_loras_present(workflow)

    def list_loras(self) -> list[str]:
        body = self.http.json("GET", "/models/loras", endpoint="/models/loras")
        if not isinstance(body, list) or not all(isinstance(name, str) for name in body):
            raise self._malformed("/models/loras", f"the LoRA list is a JSON {_kind(body)}, expected an array of names")
        return body

    def upload_image(self, data: bytes, filename: str) -> str:
        """Put a reference image into the server's input/ folder (for LoadImage); returns the stored name."""
        body = self.http.json("POST", "/upload/image", endpoint="/upload/image",
                              files={"image": (filename, data, "image/png")}, data={"overwrite": "true"})
        return self._field(self._object(body, "/upload/image", "the body"), "name", str, "/upload/image")

    def queue_prompt(self, workflow: Mapping[str, Any]) -> str:
        self.check_node_types(workflow)
        response = self.http.request("POST", "/prompt", endpoint="/prompt", json={"prompt": dict(workflow),
                                                                                   "client_id": self.client_id},
                                     ok_statuses=(400,))
        try:
            body = response.json()
        except ValueError:
            raise self._malformed("/prompt", f"HTTP {response.status_code} body is not JSON") from None
        if response.status_code == 400:
            raise GpuPermanentError(_node_errors_summary(body), backend=self.name, endpoint="/prompt",
                                    status_code=400, detail=body)
        prompt_id = self._field(self._object(body, "/prompt", "the body"), "prompt_id", str, "/prompt")
        if not _PROMPT_ID.match(prompt_id):
            raise self._malformed("/prompt", f"field 'prompt_id' {prompt_id[:40]!r} is not a usable id")
        return prompt_id

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry; None while the server does not list it yet."""
        body = self.http.json("GET", f"/history/{prompt_id}", endpoint="/history", call_id=prompt_id)
        entry = self._object(body, "/history", "the body", prompt_id).get(prompt_id)
        return None if entry is None else self._object(entry, "/history", f"entry {prompt_id!r}", prompt_id)

    def wait(self, prompt_id: str, timeout_s: float, poll_interval: float = 0.25) -> dict[str, Any]:
        """The history entry once the prompt finished; GpuTimeoutError after `timeout_s`, GpuPermanentError when
        execution failed (with the node and exception ComfyUI reported)."""
        deadline = time.monotonic() + timeout_s
        while True:
            entry = self.history(prompt_id)
            status = self._object((entry or {}).get("status") or {}, "/history", "field 'status'", prompt_id)
            if status.get("status_str") == "error":
                messages = status.get("messages")
                failure = next((m[1] for m in (messages if isinstance(messages, list) else [])
                                if isinstance(m, list) and len(m) == 2 and m[0] == "execution_error"
                                and isinstance(m[1], dict)), {})
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
        outputs = self._object(entry.get("outputs", {}), "/history", "field 'outputs'", prompt_id)
        images = []
        for node_id in sorted(outputs, key=lambda n: (len(n), n)):
            output = self._object(outputs[node_id], "/history", f"outputs[{node_id!r}]", prompt_id)
            listed = output.get("images", [])
            if not isinstance(listed, list):
                raise self._malformed("/history",
                                      f"outputs[{node_id!r}].images is a JSON {_kind(listed)}, expected an array",
                                      prompt_id)
            for image in listed:
                image = self._object(image, "/history", f"an image of node {node_id}", prompt_id)
                params = {"filename": self._field(image, "filename", str, "/history", prompt_id),
                          "subfolder": str(image.get("subfolder", "")), "type": str(image.get("type", "output"))}
                images.append(
                    self.http.request("GET", "/view", endpoint="/view", call_id=prompt_id, params=params).content)
        return images

    def run(self, workflow: Mapping[str, Any], timeout_s: float) -> tuple[str, list[bytes]]:
        """Preflight, queue, wait, fetch: (prompt id, PNG bytes of every output image)."""
        self.preflight(workflow)
        prompt_id = self.queue_prompt(workflow)
        self.wait(prompt_id, timeout_s)
        return prompt_id, self.fetch_outputs(prompt_id)

    def close(self) -> None:
        self.http.close()
