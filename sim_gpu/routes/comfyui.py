"""The ComfyUI subset a pod serves: /object_info, /models, /prompt, /history, /queue, /view, /upload/image."""

from __future__ import annotations

import asyncio
import json
import os
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from sim_gpu.routes.common import SAFE_NAME, State, error_response, inject_faults

router = APIRouter()


@router.get("/system_stats")
def system_stats(sim: State, _plan=Depends(inject_faults("system_stats"))) -> Any:
    # The shape of ComfyUI's server.py; the numbers describe no real machine.
    return {"system": {"os": os.name, "ram_total": 0, "ram_free": 0, "comfyui_version": sim.config.comfyui_version,
                       "required_frontend_version": "", "installed_templates_version": "",
                       "required_templates_version": "", "python_version": "", "pytorch_version": "",
                       "embedded_python": False, "argv": []},
            "devices": [{"name": "simulated", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                         "torch_vram_total": 0, "torch_vram_free": 0}]}


@router.get("/object_info")
def object_info(sim: State, _plan=Depends(inject_faults("object_info"))) -> Any:
    return sim.comfy.object_info()


@router.get("/object_info/{class_type}")
def object_info_one(class_type: str, sim: State, _plan=Depends(inject_faults("object_info"))) -> Any:
    info = sim.comfy.object_info()
    return {class_type: info[class_type]} if class_type in info else {}


@router.get("/models/{folder}")
def models(folder: str, sim: State, _plan=Depends(inject_faults("models"))) -> Any:
    files = sim.comfy.available_files()
    if folder not in files:
        return error_response(404, f"unknown models folder {folder!r}")
    return files[folder]


@router.post("/prompt")
async def prompt(request: Request, sim: State, _plan=Depends(inject_faults("prompt"))) -> Any:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return JSONResponse({"error": {"type": "invalid_prompt", "message": "body is not JSON", "details": "",
                                       "extra_info": {}}, "node_errors": {}}, status_code=400)
    if not isinstance(body, dict) or "prompt" not in body:
        return JSONResponse({"error": {"type": "no_prompt", "message": "No prompt provided",
                                       "details": "No prompt provided", "extra_info": {}}, "node_errors": {}},
                            status_code=400)
    status, answer = await asyncio.to_thread(sim.comfy.submit, body["prompt"], body.get("client_id"))
    return JSONResponse(answer, status_code=status)


@router.get("/history/{prompt_id}")
def history(prompt_id: str, sim: State, _plan=Depends(inject_faults("history"))) -> Any:
    entry = sim.comfy.history.get(prompt_id)
    return {prompt_id: entry} if entry else {}


@router.get("/queue")
def queue_state(sim: State) -> Any:
    return {"queue_running": sim.comfy.running(), "queue_pending": sim.comfy.pending()}


@router.get("/view")
def view(filename: str, sim: State, subfolder: str = "", type: str = "output",
         _plan=Depends(inject_faults("view"))) -> Response:
    home = sim.config.home
    folder = {"output": home / "output", "input": home / "input"}.get(type)
    if folder is None or not SAFE_NAME.match(filename) or (subfolder and not SAFE_NAME.match(subfolder)):
        return Response(status_code=400)
    path = folder / subfolder / filename
    if not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, media_type="image/png" if filename.endswith(".png") else "application/octet-stream")


@router.post("/upload/image")
async def upload_image(request: Request, sim: State, _plan=Depends(inject_faults("upload"))) -> Any:
    fields = _multipart(request.headers.get("content-type", ""), await request.body())
    image = fields.get("image")
    if image is None or not image[0]:
        return Response(status_code=400)
    name = Path(image[0]).name
    if not SAFE_NAME.match(name):
        return Response(status_code=400)
    (sim.config.home / "input" / name).write_bytes(image[1])
    return {"name": name, "subfolder": "", "type": "input"}


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
