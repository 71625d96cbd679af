"""GPU throughput of the deployment as shipped, next to the GPU-bound ideal measured in the same run.

    .venv/bin/python benchmarks/gpu_throughput.py [--faces DIR] [--generations 24] [--training-seconds 60]
                                                  [--image-seconds 3] [--levels 1,4,8,16] [--home DIR]

What runs: `lora-pipelines sim-gpu serve --training-seconds 60 --faults <3 s latency on every generation endpoint>`
and `dagster-daemon run` on this checkout's workspace.yaml, with DAGSTER_HOME holding the package's dagster.yaml
(the one `lora-pipelines demo` installs) and every LORA_PIPELINES_* setting at its default (SQLite app database,
folder object store) except the service URL. The script only writes rows, as `character add` and `generate` do;
the daemon's sensors and runs do the rest.

1. Warm-up: a character without LoRA (Jack Dorsey) and one generation, run by the daemon; then one face-swap call
   at a time against the service gives the GPU time of one call (the ideal's unit).
2. Together: a LoRA-enabled character (Katy Perry, trained for every base model in
   LORA_PIPELINES_TRAIN_BASE_MODELS) and N generations for Jack (qwen-image without LoRA: Modal /face-swap).
   Printed: time until the N generations succeeded, until each LoRA was ready, and their ideals (N calls at
   LORA_PIPELINES_GPU_CONCURRENCY at once; the training time).
3. Generations per minute at 1, 4, 8 and 16 parallel calls: the daemon restarted with
   LORA_PIPELINES_GPU_CONCURRENCY at each level, one batch of 16 generations; the rate is over the batch's run
   (first claim to last finish), the ideal is ceil(16 / level) GPU calls end to end.
4. The orchestrator's overhead per job, from the job rows of step 2: in the run (claim, LoRA lookup, upload,
   database writes: the job's time minus its GPU call and its wait for a call slot), and before it (enqueue to
   claim: sensor tick and run launch, shared by a batch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GENERATION_ENDPOINTS = ("flux-lora", "qwen-image-2512-lora", "standard", "face-swap")
BATCH = 16  # the pending_generations sensor's batch size
PROMPT = "portrait photo by a window, soft light"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.25) -> float:
    """Seconds until `condition` held (polled every `interval_s`)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


class Process:
    """A process of the deployment, in its own process group (the daemon starts its code server and run
    workers in it), with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        try:  # what is left of the group (run workers)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


class Deployment:
    def __init__(self, home: Path, args: argparse.Namespace) -> None:
        from lora_pipelines.gpu.sim_launcher import free_port

        self.home, self.args = home, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True)
        shipped = (resources.files("lora_pipelines") / "templates" / "dagster.yaml").read_bytes()
        (dagster_home / "dagster.yaml").write_bytes(shipped)
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("LORA_PIPELINES_")}
        self.env.update({"LORA_PIPELINES_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
                         "LORA_PIPELINES_SIM_GPU_URL": self.url,
                         "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        self.sim: Process | None = None
        self.daemon: Process | None = None

    def start_sim(self) -> None:
        latency = {name: {"latency_ms": self.args.image_seconds * 1000} for name in GENERATION_ENDPOINTS}
        (self.home / "objects").mkdir(parents=True, exist_ok=True)
        self.sim = Process("sim-gpu", [str(BIN / "lora-pipelines"), "sim-gpu", "serve", "--port", str(self.port),
                                       "--home", str(self.home / "sim_gpu"), "--allow-root", str(self.home / "objects"),
                                       "--training-seconds", str(self.args.training_seconds),
                                       "--faults", json.dumps({"endpoints": latency})],
                           self.env, self.home / "sim_gpu.log")
        from lora_pipelines.gpu.sim_launcher import is_healthy

        wait_until(lambda: is_healthy(self.url), 60, "the simulated GPU service")

    def runs_in_progress(self) -> int:
        import dagster as dg

        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            return len(instance.get_run_records(dg.RunsFilter(statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED])))

    def settle(self) -> None:
        """Let the runs in progress end (a generation run scores and checks after its last job)."""
        wait_until(lambda: self.runs_in_progress() == 0, 600, "the runs in progress", interval_s=1.0)

    def start_daemon(self, **env: str) -> None:
        if self.daemon is not None:
            self.settle()
            self.daemon.stop()
        command = [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")]
        self.daemon = Process("dagster-daemon", command, {**self.env, **env}, self.home / "daemon.log")

    def stop(self) -> None:
        for process in (self.daemon, self.sim):
            if process is not None:
                process.stop()


def gpu_call_seconds(url: str, photo: bytes, calls: int = 3) -> float:
    """Median time of one face-swap call made alone: the unit of the GPU-bound ideal."""
    import base64

    from lora_pipelines.gpu.endpoints import ModalEndpointsClient
    from lora_pipelines.gpu.schemas import FaceSwapRequest

    client = ModalEndpointsClient(url, timeout_s=120, name="benchmark")
    seconds = []
    try:
        for seed in range(calls):
            started = time.monotonic()
            client.face_swap(FaceSwapRequest(model="qwen-image", prompt=PROMPT, width=512, height=512, seed=seed,
                                             reference_image_b64=base64.b64encode(photo).decode()))
            seconds.append(time.monotonic() - started)
    finally:
        client.close()
    return statistics.median(seconds)


def _with_status(jobs, ids: list[int], status: str) -> list[int]:
    """One query, so that watching does not load the machine it measures."""
    import sqlalchemy as sa

    query = sa.text("SELECT id FROM generation_jobs WHERE status = :status AND id BETWEEN :a AND :b")
    with jobs.db.engine.connect() as conn:
        return list(conn.execute(query, {"status": status, "a": min(ids), "b": max(ids)}).scalars())


def succeeded(jobs, ids: list[int]) -> int:
    return len(_with_status(jobs, ids, "succeeded"))


def failed(jobs, ids: list[int]) -> list[int]:
    return _with_status(jobs, ids, "failed")


def overheads(rows, enqueued_at) -> tuple[float, float]:
    """Median seconds per job in the run beside its GPU call and slot wait, and from enqueue to claim."""
    in_run, before = [], []
    for job in rows:
        routes = job.input_metadata.get("routes") or []
        gpu = sum(r.get("duration_ms", 0) + r.get("wait_ms", 0) for r in routes) / 1000
        in_run.append((job.finished_at - job.started_at).total_seconds() - gpu)
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        before.append((started - enqueued_at).total_seconds())
    return statistics.median(in_run), statistics.median(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = Path(os.environ.get("LORA_PIPELINES_SHARED", REPO.parent / "shared"))
    parser.add_argument("--faces", type=Path, default=shared / "faces")
    parser.add_argument("--generations", type=int, default=24)
    parser.add_argument("--training-seconds", type=float, default=60.0)
    parser.add_argument("--image-seconds", type=float, default=3.0)
    parser.add_argument("--levels", default="1,4,8,16", help="parallel calls to measure generations per minute at")
    parser.add_argument("--home", type=Path, default=None, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    photos = {name: sorted(p for p in (args.faces / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
              for name in ("jack_dorsey", "katy_perry")}

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    deployment = Deployment(home, args)
    os.environ.update({k: v for k, v in deployment.env.items() if k.startswith(("LORA_PIPELINES_", "DAGSTER_"))})
    from lora_pipelines.services.characters import add_character
    from lora_pipelines.services.context import PipelineContext
    from lora_pipelines.settings import load_settings
    from lora_pipelines.store.generation_jobs import GenerationJobsRepository
    from lora_pipelines.store.lora_models import LoraModelsRepository

    settings = load_settings()
    ctx = PipelineContext.from_settings(settings)
    ctx.db.upgrade()
    jobs, loras = GenerationJobsRepository(ctx.db), LoraModelsRepository(ctx.db)
    results: dict[str, object] = {}
    try:
        log(f"home {home}; simulated GPU service on {deployment.url}")
        deployment.start_sim()
        deployment.start_daemon()
        jack, _ = add_character(ctx, "Jack Dorsey", photos["jack_dorsey"], lora_enabled=False)
        warm = jobs.enqueue(jack.id, "qwen-image", PROMPT)
        log("warm-up: the daemon runs one generation")
        wait_until(lambda: succeeded(jobs, warm) == 1 or failed(jobs, warm), 600, "the warm-up generation")
        call_s = gpu_call_seconds(deployment.url, photos["jack_dorsey"][0].read_bytes())
        log(f"one GPU call alone: {call_s:.2f} s")

        # 2. a training and N generations of another character, enqueued together
        n = args.generations
        log(f"enqueueing a LoRA-enabled character and {n} generations of another one")
        enqueued_at = datetime.now(UTC)
        t0 = time.monotonic()
        katy, _ = add_character(ctx, "Katy Perry", photos["katy_perry"], lora_enabled=True)
        ids = jobs.enqueue(jack.id, "qwen-image", PROMPT, count=n)
        models = settings.train_base_model_list
        gens_done, ready_at = None, {}
        while gens_done is None or len(ready_at) < len(models):
            now = time.monotonic() - t0
            if gens_done is None and succeeded(jobs, ids) == n:
                gens_done = now
                log(f"{n} generations succeeded after {now:.1f} s")
            for row in loras.find_by_character_id(katy.id):
                if row.status == "ready" and row.base_model not in ready_at:
                    ready_at[row.base_model] = now
                    log(f"LoRA {row.base_model} ready after {now:.1f} s")
                if row.status == "failed":
                    raise SystemExit(f"LoRA {row.base_model} failed: {row.error}")
            if failed(jobs, ids):
                raise SystemExit(f"generation jobs failed: {failed(jobs, ids)}")
            if now > 900:
                raise SystemExit("the deployment did not finish within 15 minutes")
            time.sleep(0.5)
        rows = [jobs.get(i) for i in ids]
        in_run_s, before_s = overheads(rows, enqueued_at)
        stats = httpx.get(f"{deployment.url}/_sim/stats", timeout=10).json()
        results["together"] = {"generations_s": gens_done, "ready_s": ready_at, "in_run_s": in_run_s,
                               "before_s": before_s, "peak": stats["peak_in_flight"].get("face-swap")}

        # 3. generations per minute at each level of parallel calls
        rates = {}
        for level in [int(x) for x in args.levels.split(",") if x.strip()]:
            log(f"restarting the daemon with LORA_PIPELINES_GPU_CONCURRENCY={level}")
            deployment.start_daemon(LORA_PIPELINES_GPU_CONCURRENCY=str(level))
            batch = jobs.enqueue(jack.id, "qwen-image", PROMPT, count=BATCH)
            wait_until(lambda b=batch: succeeded(jobs, b) == BATCH or failed(jobs, b), 900, f"batch at {level}")
            if failed(jobs, batch):
                raise SystemExit(f"jobs failed at {level} parallel calls: {failed(jobs, batch)}")
            rows = [jobs.get(i) for i in batch]
            span = (max(r.finished_at for r in rows) - min(r.started_at for r in rows)).total_seconds()
            ideal = math.ceil(BATCH / level) * call_s
            rates[level] = (BATCH / span * 60, BATCH / ideal * 60)
            log(f"{level} parallel: {rates[level][0]:.1f} generations/min (ideal {rates[level][1]:.1f})")
        results["rates"] = rates
        deployment.settle()
    finally:
        deployment.stop()
        ctx.close()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    report(results, call_s, args, settings)


def report(results: dict, call_s: float, args: argparse.Namespace, settings) -> None:
    together = results["together"]
    n, parallel = args.generations, settings.gpu_concurrency
    ideal_gens = math.ceil(n / parallel) * call_s
    print(f"\nGPU throughput, deployment as shipped (dagster-daemon + the package's dagster.yaml; sim-gpu serve with "
          f"{args.training_seconds:g} s trainings and {args.image_seconds:g} s per image); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"one GPU call alone: {call_s:.2f} s; LORA_PIPELINES_GPU_CONCURRENCY={parallel}\n")
    print(f"{'':58} {'measured':>10} {'GPU-bound ideal':>16}")
    print(f"{f'{n} generations succeeded, while a training runs':58} {together['generations_s']:>9.1f}s "
          f"{ideal_gens:>15.1f}s")
    for model, seconds in together["ready_s"].items():
        print(f"{f'LoRA ready: {model}':58} {seconds:>9.1f}s {args.training_seconds:>15.1f}s")
    for level, (measured, ideal) in results["rates"].items():
        label = f"generations per minute at {level} parallel call{'s' if level > 1 else ''}"
        print(f"{label:58} {measured:>10.1f} {ideal:>16.1f}")
    print(f"\norchestrator overhead per job (median of the {n}): {together['in_run_s'] * 1000:.0f} ms in the run "
          f"(claim, LoRA lookup, upload, database; the GPU call and the wait for a slot excluded), "
          f"{together['before_s']:.1f} s from enqueue to claim (sensor tick and run launch, once per batch)")
    print(f"most face-swap calls in flight at once during the {n} generations: {together['peak']}")


if __name__ == "__main__":
    main()
