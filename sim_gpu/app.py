"""The simulated GPU service as one FastAPI app: the routers of each surface over one shared state, and the
middleware that counts answers and truncates bodies when a fault asks for it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from sim_gpu.config import SimConfig
from sim_gpu.faults import FaultInjector
from sim_gpu.routes import comfyui, control, modal_generation, modal_training
from sim_gpu.routes.common import Abort, abort_handler
from sim_gpu.state import SimState


def create_app(config: SimConfig) -> FastAPI:
    state = SimState.create(config)
    app = FastAPI(title="lora_pipelines simulated GPU service", version="1")
    app.state.sim = state
    app.add_exception_handler(Abort, abort_handler)
    for surface in (control, modal_training, modal_generation, comfyui):
        app.include_router(surface.router)
    app.add_middleware(_FaultMiddleware, injector=state.faults)
    return app


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
                    half = body[: max(1, len(body) // 2)]
                    await send({"type": "http.response.body", "body": half, "more_body": False})
                except Exception:  # noqa: BLE001
                    pass
                raise ConnectionAbortedError("simulated truncated response")
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        except ConnectionAbortedError:
            pass
