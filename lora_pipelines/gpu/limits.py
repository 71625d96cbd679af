"""How many GPU calls this process makes at once, and how it slows down when a backend answers 429.

- `call_slots(limit)`: the process-wide cap on GPU calls in flight (LORA_PIPELINES_GPU_CONCURRENCY).
- `PodSlots(folder, limit)`: calls to one ComfyUI pod, counted across every process that shares the pod's LoRA
  folder: an flock on one of `limit` slot files there (the kernel frees the slot of a process that dies).
- `throttle_gate(key)`: one shared backoff per backend and process. A 429 pauses every call to that backend and
  halves how many may be in flight; each success lets one more back in (additive increase, multiplicative
  decrease), and a quiet spell restores the full rate.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_registry_lock = threading.Lock()
_call_slots: dict[int, threading.BoundedSemaphore] = {}
_gates: dict[str, ThrottleGate] = {}


class SlotWaitTimeout(TimeoutError):
    """No slot came free in time: the route counts as failed and the job falls back."""


@dataclass
class SlotWait:
    """How long the caller waited for its slot (recorded on the job's route attempt)."""

    seconds: float = 0.0


def call_slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore of `limit` GPU calls (one per distinct limit, so a test may use several)."""
    if limit < 1:
        raise ValueError(f"GPU concurrency must be at least 1, got {limit}")
    with _registry_lock:
        if limit not in _call_slots:
            _call_slots[limit] = threading.BoundedSemaphore(limit)
        return _call_slots[limit]


@contextlib.contextmanager
def holding(semaphore: threading.BoundedSemaphore, timeout_s: float, wait: SlotWait) -> Iterator[None]:
    started = time.monotonic()
    if not semaphore.acquire(timeout=timeout_s):
        raise SlotWaitTimeout(f"no free GPU call slot within {timeout_s:g}s")
    wait.seconds += time.monotonic() - started
    try:
        yield
    finally:
        semaphore.release()


class PodSlots:
    """`limit` slots for one ComfyUI pod, shared by threads and processes through `{folder}/.comfyui-slot-N.lock`.

    Each acquisition opens its own file description, so threads of one process exclude each other too."""

    POLL_S = 0.05

    def __init__(self, folder: Path, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"ComfyUI concurrency must be at least 1, got {limit}")
        self.folder = Path(folder)
        self.limit = limit

    @contextlib.contextmanager
    def slot(self, timeout_s: float, wait: SlotWait) -> Iterator[int]:
        self.folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        deadline = started + timeout_s
        order = list(range(self.limit))
        while True:
            random.shuffle(order)  # waiters spread over the slots instead of all queueing on slot 0
            for index in order:
                handle = (self.folder / f".comfyui-slot-{index}.lock").open("a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                wait.seconds += time.monotonic() - started
                try:
                    yield index
                finally:
                    handle.close()  # closing releases the lock
                return
            if time.monotonic() >= deadline:
                raise SlotWaitTimeout(f"all {self.limit} ComfyUI pod slots stayed busy for {timeout_s:g}s")
            time.sleep(self.POLL_S)


class ThrottleGate:
    """Admission to one backend for every thread of this process.

    `permit()` waits while a backoff pause is in force or `limit` calls are already in flight. A 429 on a call that
    started after the last cut halves the limit (to half of what was in flight) and pauses everyone, longer after
    each consecutive cut; 429s of calls already under way when the cut happened count once, as in TCP."""

    def __init__(self, *, ceiling: int = 64, initial_pause_s: float = 0.25, max_pause_s: float = 8.0,
                 recover_s: float = 30.0) -> None:
        self.ceiling = ceiling
        self.initial_pause_s = initial_pause_s
        self.max_pause_s = max_pause_s
        self.recover_s = recover_s
        self._cond = threading.Condition()
        self.limit = float(ceiling)
        self.in_flight = 0
        self.resume_at = 0.0
        self.streak = 0
        self.cut_at = 0.0
        self.throttled = 0  # 429 answers seen, for tests and logs

    def _restore_if_quiet(self, now: float) -> None:
        if self.limit < self.ceiling and self.cut_at and now - self.cut_at > self.recover_s:
            self.limit, self.streak = float(self.ceiling), 0

    @contextlib.contextmanager
    def permit(self) -> Iterator[Permit]:
        permit = self._acquire()
        try:
            yield permit
        finally:
            self._release(permit)

    def _acquire(self) -> Permit:
        with self._cond:
            while True:
                now = time.monotonic()
                self._restore_if_quiet(now)
                pause = self.resume_at - now
                if pause <= 0 and self.in_flight < max(1, int(self.limit)):
                    self.in_flight += 1
                    return Permit(started=now)
                # a paused waiter wakes with jitter so the herd does not return all at once
                self._cond.wait(timeout=pause * (1 + random.random() * 0.5) if pause > 0 else 1.0)

    def _release(self, permit: Permit) -> None:
        with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            if permit.throttled:
                self.throttled += 1
                if permit.started >= self.cut_at:
                    self.streak += 1
                    self.limit = max(1.0, min(self.limit, self.in_flight + 1) / 2)
                    pause = min(self.max_pause_s, self.initial_pause_s * 2 ** (self.streak - 1))
                    self.resume_at = max(self.resume_at, now + max(pause, permit.retry_after_s or 0.0))
                    self.cut_at = now
            elif permit.succeeded:
                self.streak = 0
                self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
            self._cond.notify_all()


@dataclass
class Permit:
    started: float
    throttled: bool = False
    succeeded: bool = False
    retry_after_s: float | None = None

    def answered(self, status_code: int, retry_after_s: float | None = None) -> None:
        self.throttled = status_code == 429
        self.succeeded = status_code < 400
        self.retry_after_s = retry_after_s


def throttle_gate(key: str) -> ThrottleGate:
    """The gate of one backend (its name and base URL) in this process."""
    with _registry_lock:
        if key not in _gates:
            _gates[key] = ThrottleGate()
        return _gates[key]
