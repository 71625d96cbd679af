"""A ComfyUI server (a pod, or the simulated one): queue an API-format workflow, wait for it, fetch its images."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from lora_pipelines.gpu.errors import GpuMalformedResponseError, GpuPermanentError, GpuTimeoutError
from lora_pipelines.gpu.http import RetryingHttp
from lora_pipelines.workflows.pod_needs import ModelFile, PodNeeds, pack_of, pod_needs, version_tuple


class PodNotReadyError(GpuPermanentError):
    """The pod cannot run the workflow: its ComfyUI is too old, or node types or model files are missing."""


class UnknownNodeTypeError(PodNotReadyError):
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


def _combo_choices(node_info: Any, input_name: str) -> list[str] | None:
    """The choices `/object_info` lists for a combo input (`[[choices], {...}]`, or V3 `["COMBO", {"options"}]`);
    None when the node or input is not there or not a combo."""
    if not isinstance(node_info, dict) or not isinstance(node_info.get("input"), dict):
        return None
    for category in ("required", "optional"):
        spec = (node_info["input"].get(category) or {}).get(input_name)
        if isinstance(spec, list) and spec:
            if isinstance(spec[0], list):
                return [str(c) for c in spec[0]]
            if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                return [str(c) for c in spec[1].get("options", [])]
    return None


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

    def system_stats(self) -> dict[str, Any]:
        answer = self.http.json("GET", "/system_stats", endpoint="/system_stats")
        return self._object(answer, "/system_stats", "the body")

    def comfyui_version(self) -> str | None:
        """`system.comfyui_version` of `GET /system_stats` (server.py); None when the server does not say."""
        try:
            system = self.system_stats().get("system")
        except GpuPermanentError as exc:
            if exc.status_code == 404:  # a server without the route is older than any version we accept
                return None
            raise
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        return version if isinstance(version, str) and version else None

    def check_pod(self, workflow: Mapping[str, Any]) -> PodNeeds:
        """Refuse, before queueing, a workflow this pod cannot run: its ComfyUI version against the workflow's
        minimum, then node types and model files against `/object_info` (fetched again once before refusing,
        in case files were added since it was cached). One line names everything missing; nothing is retried."""
        needs = pod_needs(workflow)
        problems: list[str] = []
        endpoint = "/object_info"
        version = self.comfyui_version()
        try:
            too_old = version is not None and version_tuple(version) < version_tuple(needs.min_comfyui_version)
        except ValueError:
            version, too_old = None, False
        if version is None:
            problems.append(f"it does not report its ComfyUI version (system.comfyui_version of /system_stats); "
                            f"this workflow needs ComfyUI >= {needs.min_comfyui_version} ({needs.version_reason})")
            endpoint = "/system_stats"
        elif too_old:
            problems.append(f"its ComfyUI is {version}, this workflow needs >= {needs.min_comfyui_version} "
                            f"({needs.version_reason})")
            endpoint = "/system_stats"
        missing_types, missing_files = self._missing(needs, self.object_info())
        if missing_types or missing_files:
            missing_types, missing_files = self._missing(needs, self.object_info(refresh=True))
        if missing_types:
            packs = sorted({pack.repository for pack in map(pack_of, missing_types) if pack is not None})
            problems.append(f"node types not installed: {', '.join(missing_types)}"
                            + (f" (node pack {', '.join(packs)})" if packs else ""))
        if missing_files:
            problems.append(f"model files missing: {', '.join(map(str, missing_files))}")
        if problems:
            error = UnknownNodeTypeError if missing_types else PodNotReadyError
            raise error(f"the pod cannot run this workflow: {'; '.join(problems)}", backend=self.name,
                        endpoint=endpoint)
        return needs

    @staticmethod
    def _missing(needs: PodNeeds, info: Mapping[str, Any]) -> tuple[list[str], list[ModelFile]]:
        """Node types `info` lacks, and model files its loaders' file combos do not list."""
        missing_types = [t for t in needs.node_types if t not in info]
        missing_files = []
        for model_file in needs.model_files:
            class_type, input_name = model_file.used_by.split(".", 1)
            choices = _combo_choices(info.get(class_type), input_name)
            if choices is not None and model_file.name not in choices:
                missing_files.append(model_file)
        return missing_types, missing_files

    def preflight(self, workflow: Mapping[str, Any]) -> None:
        """What to check before `POST /prompt`: ComfyUI version (`/system_stats`), node types and model files
        (`/object_info`), LoRA files (`/models/loras`)."""
        self.check_pod(workflow)
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
