"""Training routes shaped like Modal FunctionCalls: spawn, poll, cancel, and the trained files.

The real training goes through the Modal SDK and its token, so these routes take no proxy-auth headers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from lora_pipelines.gpu.schemas import ErrorResponse, SpawnResponse, TrainingPoll, TrainingSpec
from sim_gpu.routes.common import SAFE_NAME, State, error_response, inject_faults

router = APIRouter()


@router.post("/functions/{app_name}/{function}/spawn", response_model=SpawnResponse)
def spawn(app_name: str, function: str, spec: TrainingSpec, request: Request, sim: State,
          plan=Depends(inject_faults("spawn"))) -> SpawnResponse:
    call_id = sim.calls.spawn(spec, base_url=str(request.base_url), fail_reason=plan.fail_training, lost=plan.lost_call)
    return SpawnResponse(call_id=call_id)


@router.get("/function-calls/{call_id}", response_model=TrainingPoll, responses={404: {"model": ErrorResponse}})
def poll(call_id: str, sim: State, _plan=Depends(inject_faults("poll"))) -> Any:
    call = sim.calls.get(call_id)
    if call is None:
        return error_response(404, "function call not found", call_id)
    return call.poll()


@router.post("/function-calls/{call_id}/cancel", response_model=TrainingPoll, responses={404: {"model": ErrorResponse}})
def cancel(call_id: str, sim: State, _plan=Depends(inject_faults("cancel"))) -> Any:
    call = sim.calls.cancel(call_id)
    if call is None:
        return error_response(404, "function call not found", call_id)
    return call.poll()


@router.delete("/function-calls/{call_id}/files", responses={404: {"model": ErrorResponse}})
def remove_files(call_id: str, sim: State, only: str | None = None,
                 _plan=Depends(inject_faults("files"))) -> Any:
    """The Modal volume's stand-in: delete what this call trained (retention archived the LoRA), or with
    `only=step000250,final` just those files (the checkpoints not published)."""
    if not SAFE_NAME.match(call_id):
        return error_response(404, "function call not found", call_id)
    parts = [p for p in (only or "").split(",") if p] if only is not None else None
    return {"removed": sim.calls.remove_files(call_id, parts)}


@router.get("/files/{name}")
def files(name: str, sim: State, _plan=Depends(inject_faults("files"))) -> Response:
    path = sim.calls.files_dir / name
    if not SAFE_NAME.match(name) or not name.endswith(".safetensors") or not path.is_file():
        return error_response(404, "file not found", name)
    return FileResponse(path, media_type="application/octet-stream")
