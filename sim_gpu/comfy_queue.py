"""ComfyUI's single execution worker: prompts are validated against the real node schema, run one at a time,
and their results land in history, as the real server's /prompt, /history and /queue show them."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sim_gpu.comfy import execute
from sim_gpu.studio import Studio


class ComfyQueue:
    def __init__(self, studio: Studio, home: Path, step_ms: float = 10.0) -> None:
        self.studio, self.home, self.step_ms = studio, home, step_ms
        self.history: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[tuple[int, str, dict, list[str]]] = queue.Queue()
        self._number = 0
        self._lock = threading.Lock()
        self._running: list[str] = []
        self._info_cache: tuple[tuple, dict] | None = None
        self._depth = 0  # prompts queued or running
        self.peak_depth = 0  # the most at once (a pod runs one at a time; the rest wait in its queue)
        threading.Thread(target=self._work, daemon=True, name="sim-comfy-worker").start()

    def available_files(self) -> dict[str, list[str]]:
        from lora_pipelines.workflows.model_files import POD_MODEL_FILES

        files = {folder: list(names) for folder, names in POD_MODEL_FILES.items()}
        files["loras"] = sorted(p.name for p in (self.home / "models" / "loras").glob("*.safetensors"))
        files["input"] = sorted(p.name for p in (self.home / "input").iterdir() if p.is_file())
        return files

    def object_info(self) -> dict[str, Any]:
        from lora_pipelines.workflows.comfy_schema import load_object_info, with_available_files

        files = self.available_files()
        key = tuple((k, tuple(v)) for k, v in sorted(files.items()))
        if self._info_cache is None or self._info_cache[0] != key:
            self._info_cache = (key, with_available_files(load_object_info(), files))
        return self._info_cache[1]

    def submit(self, prompt: Any, client_id: str | None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of POST /prompt: 400 with node_errors, or the queued prompt's id and number."""
        from lora_pipelines.workflows.comfy_schema import validate_prompt

        validation = validate_prompt(prompt, available_files=self.available_files())
        if not validation.ok:
            return 400, validation.as_http_400_body()
        with self._lock:
            number = self._number
            self._number += 1
        prompt_id = str(uuid.uuid4())
        outputs = list(validation.good_outputs)
        self.history[prompt_id] = {"prompt": [number, prompt_id, prompt, {"client_id": client_id}, outputs],
                                   "outputs": {},
                                   "status": {"status_str": "running", "completed": False, "messages": []},
                                   "meta": {}}
        with self._lock:
            self._depth += 1
            self.peak_depth = max(self.peak_depth, self._depth)
        self._queue.put((number, prompt_id, prompt, outputs))
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": validation.node_errors}

    def running(self) -> list[str]:
        return list(self._running)

    def pending(self) -> int:
        return self._queue.qsize()

    def _work(self) -> None:
        while True:
            number, prompt_id, prompt, outputs = self._queue.get()
            self._running = [prompt_id]
            entry = self.history[prompt_id]
            started = int(time.time() * 1000)
            messages: list[list[Any]] = [["execution_start", {"prompt_id": prompt_id, "timestamp": started}]]
            steps = sum(int(n.get("inputs", {}).get("steps", 0)) for n in prompt.values()
                        if isinstance(n.get("inputs", {}).get("steps"), int))
            time.sleep(min(steps * self.step_ms / 1000, 30.0))
            try:
                run = execute(prompt, outputs, studio=self.studio, loras_dir=self.home / "models" / "loras",
                              input_dir=self.home / "input", prompt_id=prompt_id)
            except Exception as exc:  # noqa: BLE001 - an execution error is reported in history, as ComfyUI does
                run = None
                error = {"node_id": "", "exception_type": type(exc).__name__, "exception_message": str(exc)}
            else:
                error = run.error
                messages.extend(run.messages)
            with self._lock:  # the GPU is free again: the prompt's results are written next
                self._depth -= 1
            if error is None and run is not None:
                for index, (node_id, png) in enumerate(run.images):
                    filename = f"sim_{prompt_id[:8]}_{index:05d}_.png"
                    (self.home / "output" / filename).write_bytes(png)
                    entry["outputs"].setdefault(node_id, {"images": []})["images"].append(
                        {"filename": filename, "subfolder": "", "type": "output"})
                messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)}])
                entry["status"] = {"status_str": "success", "completed": True, "messages": messages}
            else:
                messages.append(["execution_error", {"prompt_id": prompt_id, **(error or {})}])
                entry["status"] = {"status_str": "error", "completed": False, "messages": messages}
            # Real shape: one entry per output node (the backend marker is in the sim_info message and the PNGs).
            entry["meta"] = {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                       "real_node_id": node_id} for node_id in entry["outputs"]}
            self._running = []
