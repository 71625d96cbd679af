"""What every route shares: the service state, fault injection and Modal proxy auth as dependencies, and
error answers."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from lora_pipelines.gpu.schemas import ErrorResponse
from sim_gpu.faults import FaultPlan
from sim_gpu.state import SimState

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")
HANG_SECONDS = 600.0


class Abort(Exception):
    """Answer with `response` instead of running the route (a dependency refused the request)."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def abort_handler(_: Request, exc: Abort) -> Response:
    return exc.response


def error_response(status: int, error: str, detail: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=error, detail=detail).model_dump(), status_code=status)


async def get_state(request: Request) -> SimState:
    return request.app.state.sim


State = Annotated[SimState, Depends(get_state)]


def inject_faults(endpoint: str) -> Callable[[Request], AsyncIterator[FaultPlan]]:
    """A dependency applying the faults configured for `endpoint`: delay, hang, error status, or truncation.
    The request counts as in flight on the endpoint until the route has answered."""

    async def apply(request: Request) -> AsyncIterator[FaultPlan]:
        request.state.sim_endpoint = endpoint
        injector = request.app.state.sim.faults
        plan = injector.plan(endpoint)
        try:
            if plan.delay_s:
                await asyncio.sleep(plan.delay_s)
            if plan.hang:  # answer nobody: wait until the client gives up (or the service stops)
                deadline = time.monotonic() + HANG_SECONDS
                while time.monotonic() < deadline and not await request.is_disconnected():
                    await asyncio.sleep(0.05)
                raise Abort(Response(status_code=504))
            if plan.error_status:
                body = ErrorResponse(error=f"simulated {plan.error_status}", detail=f"fault injected on {endpoint}")
                retry_after = "1" if plan.over_capacity else "0"
                headers = {"Retry-After": retry_after} if plan.error_status in (429, 503) else None
                raise Abort(JSONResponse(body.model_dump(), status_code=plan.error_status, headers=headers))
            if plan.truncate:
                request.state.sim_truncate = True
            yield plan
        finally:
            injector.done(endpoint)

    return apply


def modal_auth(request: Request) -> None:
    """Modal's proxy auth (Modal-Key / Modal-Secret headers), enforced when the service was given a key."""
    config = request.app.state.sim.config
    if not (config.modal_key and config.modal_secret):
        return
    key, secret = request.headers.get("Modal-Key", ""), request.headers.get("Modal-Secret", "")
    if not (hmac.compare_digest(key, config.modal_key) and hmac.compare_digest(secret, config.modal_secret)):
        raise Abort(error_response(401, "missing or invalid Modal-Key / Modal-Secret headers"))
