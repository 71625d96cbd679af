"""Faults the simulated GPU service injects on request, per endpoint, plus its request counters.

Config (CLI `--faults`, env LORA_PIPELINES_SIM_FAULTS, or `POST /_sim/faults`):
    {"seed": 0, "endpoints": {"flux-lora": {"error_rate": 0.5}, "*": {"latency_ms": 20}}}
Latency is per request (concurrent requests wait side by side, as on GPUs that scale out); `max_concurrent`
answers 429 past that many requests in flight on the endpoint, as a rate-limited backend does. The stats keep the
most requests each endpoint had in flight at once (`peak_in_flight`).
Endpoint names: spawn, poll, cancel, files, flux-lora, qwen-image-2512-lora, standard, face-swap,
object_info, models, prompt, history, view, upload; "*" applies to all.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EndpointFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of requests answered with an error status")
    error_statuses: list[int] = Field(default_factory=lambda: [503, 500, 429])
    latency_ms: float = Field(default=0, ge=0)
    cold_start_ms: float = Field(default=0, ge=0, description="extra delay on the first request only")
    hang: bool = Field(default=False, description="never answer (until the client gives up)")
    truncated_response: bool = Field(default=False, description="cut the body short of its Content-Length")
    lost_call: bool = Field(default=False, description="spawn: the call is forgotten; polls answer 404")
    fail_training: str | None = Field(default=None, description="spawn: training ends failed with this reason")
    max_faults: int | None = Field(default=None, ge=0, description="stop injecting after this many faulted requests")
    max_concurrent: int | None = Field(default=None, ge=1, description="answer 429 (Retry-After 1) past this many "
                                       "requests in flight on the endpoint; not counted against max_faults")


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    endpoints: dict[str, EndpointFaults] = Field(default_factory=dict)


class FaultPlan:
    """What to do with one request: decided once, under the lock, so concurrent requests stay seeded."""

    def __init__(self, faults: EndpointFaults | None, *, first: bool, rng: random.Random, budget_ok: bool,
                 in_flight: int = 1) -> None:
        f = faults or EndpointFaults()
        self.delay_s = (f.latency_ms + (f.cold_start_ms if first else 0)) / 1000
        active = budget_ok
        self.hang = active and f.hang
        erring = active and f.error_rate and rng.random() < f.error_rate
        self.error_status = rng.choice(f.error_statuses) if erring else None
        self.over_capacity = f.max_concurrent is not None and in_flight > f.max_concurrent
        if self.over_capacity:
            self.error_status, self.delay_s = 429, 0.0
        self.truncate = active and f.truncated_response and self.error_status is None
        self.lost_call = active and f.lost_call
        self.fail_training = f.fail_training if active else None

    @property
    def faulted(self) -> bool:
        if self.over_capacity:
            return False
        return bool(self.hang or self.error_status or self.truncate or self.lost_call or self.fail_training)


class FaultInjector:
    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.events: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight: Counter[str] = Counter()
        self.last_request = 0.0  # time.monotonic() of the latest request, for the idle watchdog
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._faulted: Counter[str] = Counter()

    def plan(self, endpoint: str) -> FaultPlan:
        """Count the request as in flight (until `done`) and decide its faults."""
        with self._lock:
            first = self.requests[endpoint] == 0
            self.requests[endpoint] += 1
            self.in_flight[endpoint] += 1
            self.peak_in_flight[endpoint] = max(self.peak_in_flight[endpoint], self.in_flight[endpoint])
            faults = self.config.endpoints.get(endpoint) or self.config.endpoints.get("*")
            budget_ok = faults is not None and (faults.max_faults is None
                                                or self._faulted[endpoint] < faults.max_faults)
            plan = FaultPlan(faults, first=first, rng=self._rng, budget_ok=budget_ok,
                             in_flight=self.in_flight[endpoint])
            if plan.faulted:
                self._faulted[endpoint] += 1
            return plan

    def done(self, endpoint: str) -> None:
        with self._lock:
            self.in_flight[endpoint] -= 1

    def record_status(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.statuses[endpoint][str(status)] += 1

    def count(self, event: str, n: int = 1) -> None:
        """Service-side events tests look at, e.g. `lora_downloads`, `dataset_downloads`."""
        with self._lock:
            self.events[event] += n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "statuses": {k: dict(v) for k, v in self.statuses.items()},
                    "events": dict(self.events), "peak_in_flight": dict(self.peak_in_flight),
                    "faults": self.config.model_dump()}

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.statuses.clear()
            self.events.clear()
            self.peak_in_flight = Counter({k: v for k, v in self.in_flight.items() if v > 0})
