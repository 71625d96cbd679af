"""The parts of one running service, built once per app and kept on `app.state.sim`."""

from __future__ import annotations

from dataclasses import dataclass

from sim_gpu.comfy_queue import ComfyQueue
from sim_gpu.config import SimConfig
from sim_gpu.faults import FaultInjector
from sim_gpu.studio import Studio
from sim_gpu.training import TrainingCalls


@dataclass
class SimState:
    config: SimConfig
    faults: FaultInjector
    calls: TrainingCalls
    studio: Studio
    comfy: ComfyQueue

    @classmethod
    def create(cls, config: SimConfig) -> SimState:
        home = config.home
        for folder in ("models/loras", "input", "output", "crowd"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        injector = FaultInjector(config.faults)
        calls = TrainingCalls(home, config.allowed_roots, duration_s=config.training_seconds, count=injector.count)
        studio = Studio(home, config.allowed_roots, count=injector.count)
        comfy = ComfyQueue(studio, home, step_ms=config.step_ms)
        return cls(config=config, faults=injector, calls=calls, studio=studio, comfy=comfy)
