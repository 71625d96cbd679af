"""A batch of generation jobs, run concurrently.

Each job runs in a thread of its own (`run_generation_job`: atomic claim, route fallback, timings); its GPU calls
wait for the slots of services/route_limits.py, so at most LORA_PIPELINES_GPU_CONCURRENCY are in flight in this
process however many threads wait. There are twice as many threads as call slots, so claiming, LoRA checks and
uploads of some jobs overlap the GPU calls of others. The face score of an output is computed by `FaceScorer`
off the job's thread and recorded on that job before the batch returns.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.generation import GenerationOutcome, run_generation_job

SCORING_NICENESS = 10


def _background_priority() -> None:
    """Scoring yields the CPU to the work others wait for (GPU calls, other runs' steps). On Linux a thread's
    niceness is its own; elsewhere this may lower the whole process, or do nothing."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCORING_NICENESS)


class FaceScorer:
    """Runs the scoring of outputs beside the GPU calls; `close()` waits until every submitted score is recorded.

    By default one thread of this process scores with the context's analyzer: dlib releases the GIL while it
    detects and embeds, so the GPU-call threads go on. With `processes` > 0 (LORA_PIPELINES_SCORING_PROCESSES),
    dlib runs in that many worker processes instead, fed by as many threads."""

    def __init__(self, ctx: PipelineContext, processes: int | None = None) -> None:
        processes = ctx.settings.scoring_processes if processes is None else processes
        self._analyzer = None
        self._ctx = ctx
        if processes > 0:
            from lora_pipelines.faces.batch import ProcessAnalyzer

            self._analyzer = ProcessAnalyzer(processes)
            self._ctx = copy.copy(ctx)  # the same database, store and GPU clients; only the analyzer differs
            self._ctx.__dict__["analyzer"] = self._analyzer  # PipelineContext.analyzer is a cached_property
        self._threads = ThreadPoolExecutor(max(1, processes), thread_name_prefix="face-scoring",
                                           initializer=_background_priority)
        self._pending: list[Future] = []

    def submit(self, scoring: Callable[[PipelineContext], None]) -> None:
        self._pending.append(self._threads.submit(scoring, self._ctx))

    def close(self) -> None:
        try:
            self._threads.shutdown(wait=True)
            for future in self._pending:
                future.result()  # scoring records its own failures on the job; anything else surfaces here
        finally:
            if self._analyzer is not None:
                self._analyzer.close()

    def __enter__(self) -> FaceScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_generation_batch(ctx: PipelineContext, job_ids: Sequence[int],
                         worker: str) -> Iterator[tuple[int, GenerationOutcome | None]]:
    """Run the jobs concurrently; yields (job id, outcome) as each finishes (None: another worker has the job).

    A job that raises (the database went away, say) stops new jobs from starting; the ones in flight finish, their
    outcomes are yielded, and then the first error is raised. Scores are all recorded when the iteration ends."""
    job_ids = list(job_ids)
    if not job_ids:
        return
    threads = min(len(job_ids), 2 * ctx.settings.gpu_concurrency)
    with contextlib.suppress(Exception):  # a backend that cannot be reached fails each job's routes, with the reason
        ctx.gpu  # noqa: B018 - build the GPU clients (and start the simulated service) before the threads
    error: BaseException | None = None
    with FaceScorer(ctx) as scorer, ThreadPoolExecutor(threads, thread_name_prefix="generation") as pool:
        running = {pool.submit(run_generation_job, ctx, job_id, worker, score_later=scorer.submit): job_id
                   for job_id in job_ids}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job_id = running.pop(future)
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None:
                        error = future.exception()
                        for queued in running:
                            queued.cancel()  # not started yet: its job stays pending for the next run
                    continue
                yield job_id, future.result()
    if error is not None:
        raise error
