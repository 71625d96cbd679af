"""The simulated GPU service: one FastAPI app speaking the Modal training + generation routes and the ComfyUI
subset, with faults on request. Run: `python -m lora_pipelines.gpu.sim_server --port N --home DIR`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import json
import os
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from lora_pipelines.gpu.base import LORA_ROUTES
from lora_pipelines.gpu.schemas import (
    AppliedLora,
    ErrorResponse,
    FaceSwapRequest,
    GenerateRequest,
    GenerateResponse,
    SpawnResponse,
    TrainingPoll,
    TrainingSpec,
)
from lora_pipelines.gpu.sim_comfy import execute
from lora_pipelines.gpu.sim_faults import FaultConfig, FaultInjector
from lora_pipelines.gpu.sim_studio import LoraRejected, Studio, is_triggered, seed_for
from lora_pipelines.gpu.sim_training import TrainingCalls

FAULTS_ENV = "LORA_PIPELINES_SIM_FAULTS"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")
HANG_SECONDS = 600.0
# What /system_stats reports. The node schema served is v0.3.64's (plus PuLID-Flux ll); the nodes Z-Image uses did
# not change up to v0.3.75, the first release that loads Z-Image, so the simulated pod reports that release.
SIM_COMFYUI_VERSION = "0.3.75"
_INJECTORS: list[FaultInjector] = []  # of the apps in this process; the idle watchdog reads the last one


@dataclass
class SimConfig:
    home: Path
    allowed_roots: list[Path] = field(default_factory=list)
    modal_key: str | None = None
    modal_secret: str | None = None
    training_seconds: float = 1.5
    step_ms: float = 10.0  # simulated sampling time per step, for generation and ComfyUI prompts
    faults: FaultConfig = field(default_factory=FaultConfig)
    comfyui_version: str = SIM_COMFYUI_VERSION

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.allowed_roots = [Path(r).resolve() for r in (self.allowed_roots or [])] + [self.home]

    @property
    def loras_dir(self) -> Path:
        return self.home / "models" / "loras"


def _error(status: int, error: str, detail: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=error, detail=detail).model_dump(), status_code=status)


class _Abort(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _FaultMiddleware:
    """Records each answer's status per endpoint and cuts bodies short when a truncation fault is planned."""

    def __init__(self, app: Any, injector: FaultInjector) -> None:
        self.app, self.injector = app, injector

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        self.injector.last_request = time.monotonic()

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start" and state.get("sim_endpoint"):
                self.injector.record_status(state["sim_endpoint"], message["status"])
            if message["type"] == "http.response.body" and state.get("sim_truncate"):
                body = message.get("body", b"")
                try:  # the server notices the short body and drops the connection, as a broken proxy would
                    await send({"type": "http.response.body", "body": body[: max(1, len(body) // 2)], "more_body": False})
                except Exception:  # noqa: BLE001
                    pass
                raise ConnectionAbortedError("simulated truncated response")
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        except ConnectionAbortedError:
            pass


def create_app(config: SimConfig) -> FastAPI:
    home = config.home
    for folder in ("models/loras", "input", "output", "crowd"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    injector = FaultInjector(config.faults)
    _INJECTORS.append(injector)
    calls = TrainingCalls(home, config.allowed_roots, duration_s=config.training_seconds, count=injector.count)
    studio = Studio(home, config.allowed_roots, count=injector.count)
    comfy = _ComfyQueue(studio, home, step_ms=config.step_ms)

    app = FastAPI(title="lora_pipelines simulated GPU service", version="1")
    app.state.sim = {"config": config, "faults": injector, "calls": calls, "studio": studio, "comfy": comfy}

    @app.exception_handler(_Abort)
    async def _abort(_: Request, exc: _Abort) -> Response:
        return exc.response

    def faults(endpoint: str):
        async def apply(request: Request) -> Any:
            request.state.sim_endpoint = endpoint
            plan = injector.plan(endpoint)
            if plan.delay_s:
                await asyncio.sleep(plan.delay_s)
            if plan.hang:  # answer nobody: wait until the client gives up (or the service stops)
                deadline = time.monotonic() + HANG_SECONDS
                while time.monotonic() < deadline and not await request.is_disconnected():
                    await asyncio.sleep(0.05)
                raise _Abort(Response(status_code=504))
            if plan.error_status:
                body = ErrorResponse(error=f"simulated {plan.error_status}", detail=f"fault injected on {endpoint}")
                headers = {"Retry-After": "0"} if plan.error_status in (429, 503) else None
                raise _Abort(JSONResponse(body.model_dump(), status_code=plan.error_status, headers=headers))
            if plan.truncate:
                request.state.sim_truncate = True
            return plan

        return apply

    def modal_auth(request: Request) -> None:
        if not (config.modal_key and config.modal_secret):
            return
        key, secret = request.headers.get("Modal-Key", ""), request.headers.get("Modal-Secret", "")
        if not (hmac.compare_digest(key, config.modal_key) and hmac.compare_digest(secret, config.modal_secret)):
            raise _Abort(_error(401, "missing or invalid Modal-Key / Modal-Secret headers"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "backend": "simulated", "home": str(home), "pid": os.getpid()}

    # ---------------- training (Modal FunctionCall shape) ----------------
    # (the real training goes through the Modal SDK and its token, so these routes take no proxy-auth headers)
    @app.post("/functions/{app_name}/{function}/spawn", response_model=SpawnResponse)
    def spawn(app_name: str, function: str, spec: TrainingSpec, request: Request,
              plan=Depends(faults("spawn"))) -> SpawnResponse:
        call_id = calls.spawn(spec, base_url=str(request.base_url), fail_reason=plan.fail_training, lost=plan.lost_call)
        return SpawnResponse(call_id=call_id)

    @app.get("/function-calls/{call_id}", response_model=TrainingPoll, responses={404: {"model": ErrorResponse}})
    def poll(call_id: str, _plan=Depends(faults("poll"))) -> Any:
        call = calls.get(call_id)
        if call is None:
            return _error(404, "function call not found", call_id)
        return call.poll()

    @app.post("/function-calls/{call_id}/cancel", response_model=TrainingPoll, responses={404: {"model": ErrorResponse}})
    def cancel(call_id: str, _plan=Depends(faults("cancel"))) -> Any:
        call = calls.cancel(call_id)
        if call is None:
            return _error(404, "function call not found", call_id)
        return call.poll()

    @app.get("/files/{name}")
    def files(name: str, _plan=Depends(faults("files"))) -> Response:
        path = calls.files_dir / name
        if not _SAFE_NAME.match(name) or not name.endswith(".safetensors") or not path.is_file():
            return _error(404, "file not found", name)
        return FileResponse(path, media_type="application/octet-stream")

    # ---------------- Modal generation endpoints ----------------
    def generate(route: str, req: GenerateRequest) -> Any:
        started = time.perf_counter()
        time.sleep(min(req.steps * config.step_ms / 1000, 30.0))
        expected = LORA_ROUTES.get(route)
        if expected and req.lora is None:
            return _error(422, "this endpoint applies a LoRA: request.lora is missing", f"/{route}")
        if not expected and req.lora is not None:
            return _error(422, "the standard endpoint does not apply LoRAs; use /flux-lora or /qwen-image-2512-lora")
        applied, identity, known = None, [], None
        if req.lora is not None:
            try:
                lora = studio.fetch_lora(req.lora.url, req.lora.sha256)
            except LoraRejected as exc:
                return _error(422, str(exc), f"lora {req.lora.lora_model_id}")
            if lora.base_model != expected:
                return _error(422, f"lora base model mismatch: the file is a {lora.base_model} LoRA, "
                                   f"/{route} runs {expected}", f"lora {req.lora.lora_model_id}")
            trigger = lora.trigger_word or req.lora.trigger_word
            triggered = is_triggered(req.prompt, trigger)
            known = lora.character_id
            if triggered and req.lora.strength_model > 0:
                identity = list(lora.faces)
            applied = AppliedLora(lora_model_id=req.lora.lora_model_id, loaded=True,
                                  strength_model=req.lora.strength_model, strength_clip=req.lora.strength_clip,
                                  detected_base_model=lora.base_model,
                                  ignored_reason=None if identity else
                                  (f"trigger word {trigger!r} not in prompt" if not triggered else "strength_model <= 0"))
        png, _shown = studio.render(seed=seed_for(req.seed, route, req.prompt), width=req.width, height=req.height,
                                    identity=identity, known_character=known,
                                    info={"mode": "lora" if req.lora else "standard", "route": route, "seed": str(req.seed),
                                          "lora": req.lora.lora_model_id if req.lora else ""})
        return GenerateResponse(image_b64=base64.b64encode(png).decode(), mode="lora" if req.lora else "standard",
                                model=req.model, prompt=req.prompt, seed=req.seed, lora=applied, backend="simulated",
                                duration_ms=(time.perf_counter() - started) * 1000)

    gen_responses = {401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

    @app.post("/flux-lora", response_model=GenerateResponse, responses=gen_responses)
    def flux_lora(req: GenerateRequest, _plan=Depends(faults("flux-lora")), _=Depends(modal_auth)) -> Any:
        return generate("flux-lora", req)

    @app.post("/qwen-image-2512-lora", response_model=GenerateResponse, responses=gen_responses)
    def qwen_lora(req: GenerateRequest, _plan=Depends(faults("qwen-image-2512-lora")), _=Depends(modal_auth)) -> Any:
        return generate("qwen-image-2512-lora", req)

    @app.post("/standard", response_model=GenerateResponse, responses=gen_responses)
    def standard(req: GenerateRequest, _plan=Depends(faults("standard")), _=Depends(modal_auth)) -> Any:
        return generate("standard", req)

    @app.post("/face-swap", response_model=GenerateResponse, responses=gen_responses)
    def face_swap(req: FaceSwapRequest, _plan=Depends(faults("face-swap")), _=Depends(modal_auth)) -> Any:
        started = time.perf_counter()
        try:
            reference = studio.reference_face(base64.b64decode(req.reference_image_b64, validate=True))
        except (binascii.Error, OSError, ValueError):
            return _error(422, "reference_image_b64 is not a base64 PNG/JPEG image")
        if reference is None:
            return _error(422, "no face found in the reference image")
        png, _shown = studio.render(seed=seed_for(req.seed, "face-swap", req.prompt), width=req.width, height=req.height,
                                    reference=reference, info={"mode": "face_swap", "seed": str(req.seed)})
        return GenerateResponse(image_b64=base64.b64encode(png).decode(), mode="face_swap", model=req.model,
                                prompt=req.prompt, seed=req.seed, backend="simulated",
                                duration_ms=(time.perf_counter() - started) * 1000)

    # ---------------- ComfyUI subset ----------------
    @app.get("/system_stats")
    def system_stats(_plan=Depends(faults("system_stats"))) -> Any:
        # The shape of ComfyUI's server.py; the numbers describe no real machine.
        return {"system": {"os": os.name, "ram_total": 0, "ram_free": 0, "comfyui_version": config.comfyui_version,
                           "required_frontend_version": "", "installed_templates_version": "",
                           "required_templates_version": "", "python_version": "", "pytorch_version": "",
                           "embedded_python": False, "argv": []},
                "devices": [{"name": "simulated", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                             "torch_vram_total": 0, "torch_vram_free": 0}]}

    @app.get("/object_info")
    def object_info(_plan=Depends(faults("object_info"))) -> Any:
        return comfy.object_info()

    @app.get("/object_info/{class_type}")
    def object_info_one(class_type: str, _plan=Depends(faults("object_info"))) -> Any:
        info = comfy.object_info()
        return {class_type: info[class_type]} if class_type in info else {}

    @app.get("/models/{folder}")
    def models(folder: str, _plan=Depends(faults("models"))) -> Any:
        files = comfy.available_files()
        if folder not in files:
            return _error(404, f"unknown models folder {folder!r}")
        return files[folder]

    @app.post("/prompt")
    async def prompt(request: Request, _plan=Depends(faults("prompt"))) -> Any:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": {"type": "invalid_prompt", "message": "body is not JSON", "details": "",
                                           "extra_info": {}}, "node_errors": {}}, status_code=400)
        if not isinstance(body, dict) or "prompt" not in body:
            return JSONResponse({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                                           "extra_info": {}}, "node_errors": {}}, status_code=400)
        return await asyncio.to_thread(comfy.submit, body["prompt"], body.get("client_id"))

    @app.get("/history/{prompt_id}")
    def history(prompt_id: str, _plan=Depends(faults("history"))) -> Any:
        entry = comfy.history.get(prompt_id)
        return {prompt_id: entry} if entry else {}

    @app.get("/queue")
    def queue_state() -> Any:
        return {"queue_running": comfy.running(), "queue_pending": comfy.pending()}

    @app.get("/view")
    def view(filename: str, subfolder: str = "", type: str = "output", _plan=Depends(faults("view"))) -> Response:
        folder = {"output": home / "output", "input": home / "input"}.get(type)
        if folder is None or not _SAFE_NAME.match(filename) or (subfolder and not _SAFE_NAME.match(subfolder)):
            return Response(status_code=400)
        path = folder / subfolder / filename
        if not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type="image/png" if filename.endswith(".png") else "application/octet-stream")

    @app.post("/upload/image")
    async def upload_image(request: Request, _plan=Depends(faults("upload"))) -> Any:
        fields = _multipart(request.headers.get("content-type", ""), await request.body())
        image = fields.get("image")
        if image is None or not image[0]:
            return Response(status_code=400)
        name = Path(image[0]).name
        if not _SAFE_NAME.match(name):
            return Response(status_code=400)
        (home / "input" / name).write_bytes(image[1])
        return {"name": name, "subfolder": "", "type": "input"}

    # ---------------- simulator control ----------------
    @app.post("/_sim/faults")
    def set_faults(new: FaultConfig) -> Any:
        injector.configure(new)
        return new.model_dump()

    @app.get("/_sim/stats")
    def stats() -> Any:
        return injector.stats()

    @app.post("/_sim/reset_stats")
    def reset_stats() -> Any:
        injector.reset_stats()
        return {"ok": True}

    app.add_middleware(_FaultMiddleware, injector=injector)
    return app


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """{field: (filename, bytes)} of a multipart/form-data body (ComfyUI's /upload/image form)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class _ComfyQueue:
    """ComfyUI's single execution worker: prompts run one at a time, results land in history."""

    def __init__(self, studio: Studio, home: Path, step_ms: float = 10.0) -> None:
        self.studio, self.home, self.step_ms = studio, home, step_ms
        self.history: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[tuple[int, str, dict, list[str]]] = queue.Queue()
        self._number = 0
        self._lock = threading.Lock()
        self._running: list[str] = []
        self._info_cache: tuple[tuple, dict] | None = None
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

    def submit(self, prompt: Any, client_id: str | None) -> JSONResponse:
        from lora_pipelines.workflows.comfy_schema import validate_prompt

        validation = validate_prompt(prompt, available_files=self.available_files())
        if not validation.ok:
            return JSONResponse(validation.as_http_400_body(), status_code=400)
        with self._lock:
            number = self._number
            self._number += 1
        prompt_id = str(uuid.uuid4())
        outputs = list(validation.good_outputs)
        self.history[prompt_id] = {"prompt": [number, prompt_id, prompt, {"client_id": client_id}, outputs],
                                   "outputs": {}, "status": {"status_str": "running", "completed": False, "messages": []},
                                   "meta": {}}
        self._queue.put((number, prompt_id, prompt, outputs))
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": validation.node_errors})

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


def load_faults(text: str | None) -> FaultConfig:
    """Faults from JSON text, or from the file it names; empty → none."""
    if not text:
        return FaultConfig()
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text()
    return FaultConfig.model_validate_json(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora_pipelines.gpu.sim_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8189)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("LORA_PIPELINES_HOME", ".lora_pipelines")) / "sim_gpu")
    parser.add_argument("--allow-root", action="append", default=[], type=Path, help="folder file:// URLs may read")
    parser.add_argument("--faults", default=os.environ.get(FAULTS_ENV), help="fault JSON, or a file holding it")
    parser.add_argument("--training-seconds", type=float, default=1.5)
    parser.add_argument("--comfyui-version", default=SIM_COMFYUI_VERSION, help="what /system_stats reports")
    parser.add_argument("--idle-exit-seconds", type=float, default=None,
                        help="exit after this long without requests, or as soon as --home is deleted")
    args = parser.parse_args(argv)
    if args.idle_exit_seconds:
        _exit_when_idle(args.home.resolve(), args.idle_exit_seconds)
    serve(SimConfig(home=args.home, allowed_roots=args.allow_root, training_seconds=args.training_seconds,
                    faults=load_faults(args.faults), comfyui_version=args.comfyui_version,
                    modal_key=os.environ.get("LORA_PIPELINES_SIM_MODAL_KEY"),
                    modal_secret=os.environ.get("LORA_PIPELINES_SIM_MODAL_SECRET")),
          host=args.host, port=args.port)


def _exit_when_idle(home: Path, idle_s: float) -> None:
    """For services started on demand: nobody stops them, so they stop themselves."""
    started = time.monotonic()

    def watch() -> None:
        while True:
            time.sleep(min(5.0, idle_s / 4))
            last = max(started, _INJECTORS[-1].last_request if _INJECTORS else started)
            if not home.exists() or time.monotonic() - last > idle_s:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="sim-idle-exit").start()


def serve(config: SimConfig, *, host: str = "127.0.0.1", port: int = 8189) -> None:
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
