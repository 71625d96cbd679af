"""Which GPU call slots a generation route takes.

Every route takes one of the process's LORA_PIPELINES_GPU_CONCURRENCY call slots. A ComfyUI route first takes one
of the pod's LORA_PIPELINES_COMFYUI_CONCURRENCY slots: the pod is one GPU, and jobs routed to it queue here rather
than in its prompt queue, where they would spend their timeout waiting. Pod slots are counted across processes
through files in the pod's LoRA folder (or under LORA_PIPELINES_HOME when the pod's folder is not known).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lora_pipelines.gpu.limits import PodSlots, SlotWait, call_slots, holding
from lora_pipelines.services.context import PipelineContext

SLOT_WAIT_TIMEOUTS = 5  # a job waits at most this many GPU timeouts for a slot, then the route counts as failed


@contextlib.contextmanager
def route_slot(ctx: PipelineContext, route_kind: str, waited: SlotWait) -> Iterator[None]:
    """Hold the slots a call on a route of `route_kind` needs; the time spent waiting is added to `waited`."""
    settings = ctx.settings
    timeout_s = SLOT_WAIT_TIMEOUTS * settings.gpu_timeout_seconds
    with contextlib.ExitStack() as held:
        if route_kind == "comfyui_workflow":
            folder = ctx.gpu.loras_root or settings.resolved_home / "gpu"
            held.enter_context(PodSlots(folder, settings.comfyui_concurrency).slot(timeout_s, waited))
        held.enter_context(holding(call_slots(settings.gpu_concurrency), timeout_s, waited))
        yield
