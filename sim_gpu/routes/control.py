"""Health and the test controls: set faults, read and reset the request counters."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from sim_gpu.faults import FaultConfig
from sim_gpu.routes.common import State

router = APIRouter()


@router.get("/health")
def health(sim: State) -> dict[str, Any]:
    return {"status": "ok", "backend": "simulated", "home": str(sim.config.home), "pid": os.getpid()}


@router.post("/_sim/faults")
def set_faults(new: FaultConfig, sim: State) -> Any:
    sim.faults.configure(new)
    return new.model_dump()


@router.get("/_sim/stats")
def stats(sim: State) -> Any:
    return {**sim.faults.stats(), "comfyui_queue_peak": sim.comfy.peak_depth}


@router.post("/_sim/reset_stats")
def reset_stats(sim: State) -> Any:
    sim.faults.reset_stats()
    sim.comfy.peak_depth = 0
    return {"ok": True}
