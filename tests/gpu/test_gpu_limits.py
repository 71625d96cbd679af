"""The GPU call limits of gpu/limits.py with real threads and processes: pod slots shared across processes, and the
shared backoff that a 429 applies to every call of the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lora_pipelines.gpu.limits import PodSlots, SlotWait, SlotWaitTimeout, ThrottleGate, call_slots, holding


class Occupancy:
    """Counts holders of a resource and the most there ever were at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = 0

    def __enter__(self) -> Occupancy:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def test_pod_slots_let_only_the_limit_in_at_once_and_record_the_wait(tmp_path):
    slots, inside = PodSlots(tmp_path, 2), Occupancy()
    waits: list[float] = []

    def call(_: int) -> None:
        waited = SlotWait()
        with slots.slot(10.0, waited), inside:
            time.sleep(0.1)
        waits.append(waited.seconds)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(8)))

    assert inside.peak == 2
    assert max(waits) >= 0.2, "the last callers waited for two rounds of calls"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".comfyui-slot-0.lock", ".comfyui-slot-1.lock"]


HOLDER = textwrap.dedent("""
    import sys, time
    from lora_pipelines.gpu.limits import PodSlots, SlotWait
    with PodSlots(sys.argv[1], 1).slot(10.0, SlotWait()):
        print("holding", flush=True)
        time.sleep(60)
""")


def test_a_slot_held_by_another_process_is_freed_when_that_process_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline().strip() == b"holding"
        with pytest.raises(SlotWaitTimeout):
            with PodSlots(tmp_path, 1).slot(0.3, SlotWait()):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        waited = SlotWait()
        with PodSlots(tmp_path, 1).slot(5.0, waited):
            assert waited.seconds < 5.0
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()


def test_process_call_slots_cap_the_calls_in_flight():
    semaphore, inside = call_slots(3), Occupancy()
    assert call_slots(3) is semaphore, "one semaphore per limit in the process"

    def call(_: int) -> None:
        with holding(semaphore, 10.0, SlotWait()), inside:
            time.sleep(0.05)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(call, range(20)))
    assert inside.peak == 3


def _answer(gate: ThrottleGate, status: int, *, hold_s: float = 0.0) -> None:
    with gate.permit() as permit:
        time.sleep(hold_s)
        permit.answered(status)


def test_a_429_pauses_every_caller_and_halves_the_calls_in_flight():
    gate = ThrottleGate(initial_pause_s=0.3)
    with ThreadPoolExecutor(8) as pool:  # eight calls in flight, as a batch makes them
        list(pool.map(lambda _: _answer(gate, 200, hold_s=0.05), range(8)))
    assert gate.limit == gate.ceiling

    permits = [gate._acquire() for _ in range(8)]
    for permit in permits:  # the whole wave is refused: one cut, not eight
        permit.answered(429)
        gate._release(permit)
    assert gate.throttled == 8 and gate.streak == 1
    assert gate.limit == 4.0, "half of the eight that were in flight"

    started = time.monotonic()
    _answer(gate, 200)
    assert time.monotonic() - started >= 0.25, "the next call, from any thread, waits out the pause"
    assert gate.streak == 0 and 4.0 < gate.limit < 5.0, "a success lets calls back in one by one"


def test_consecutive_cuts_pause_longer_and_a_quiet_spell_restores_the_full_rate():
    gate = ThrottleGate(initial_pause_s=0.05, max_pause_s=1.0, recover_s=0.5)
    pauses = []
    for _ in range(3):
        before = time.monotonic()
        _answer(gate, 429)
        pauses.append(gate.resume_at - before)
    assert pauses[0] < pauses[1] < pauses[2]
    assert gate.limit == 1.0
    time.sleep(0.6)
    _answer(gate, 200)
    assert gate.limit == gate.ceiling
