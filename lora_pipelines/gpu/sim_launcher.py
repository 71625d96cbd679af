"""Starting the simulated GPU service (the `sim_gpu` package) on demand, as a process of its own shared by later
processes. Only its module name is used here: nothing of the service is imported into the orchestrator."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

SERVICE_MODULE = "sim_gpu"
STATE_FILE = "sim_gpu.json"
START_TIMEOUT_S = 60.0
IDLE_EXIT_S = 1800.0
# Services started here outlive this process by design; holding their handles keeps Popen from warning, when one
# is garbage-collected, that its process is still running.
_STARTED: list[subprocess.Popen] = []


class SimGpuStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/health", timeout=timeout_s)
        return response.status_code == 200 and response.json().get("backend") == "simulated"
    except (httpx.HTTPError, ValueError):
        return False


def _wait_healthy(base_url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_healthy(base_url, timeout_s=1.0):
            return
        if process is not None and process.poll() is not None:
            raise SimGpuStartError(
                f"simulated GPU service exited with code {process.returncode} before answering /health")
        time.sleep(0.1)
    raise SimGpuStartError(f"simulated GPU service at {base_url} did not answer /health within {timeout_s:.0f}s")


def sim_home(home: Path) -> Path:
    """Where the service keeps its state under LORA_PIPELINES_HOME."""
    return Path(home).expanduser().resolve() / "sim_gpu"


def ensure_sim_gpu_running(home: Path, *, allowed_roots: Sequence[Path] = (), timeout_s: float = START_TIMEOUT_S,
                           idle_exit_s: float = IDLE_EXIT_S) -> str:
    """Base URL of the simulated service for `home`: the one recorded in {home}/sim_gpu/sim_gpu.json if it still
    answers, else a new `python -m sim_gpu` subprocess on a free port (recorded for reuse).

    `home` is LORA_PIPELINES_HOME; file:// URLs under it (and under `allowed_roots`) may be read by the service.
    The subprocess exits by itself after `idle_exit_s` without requests, or once its home is deleted.
    """
    root = sim_home(home)
    root.mkdir(parents=True, exist_ok=True)
    state = root / STATE_FILE
    lock_path = root / "sim_gpu.lock"
    import fcntl

    with lock_path.open("w") as lock:  # two processes starting at once start one service
        fcntl.flock(lock, fcntl.LOCK_EX)
        if state.exists():
            try:
                recorded = json.loads(state.read_text())
                if is_healthy(recorded["url"]):
                    return recorded["url"]
            except (ValueError, KeyError):
                pass
        if importlib.util.find_spec(SERVICE_MODULE) is None:
            raise SimGpuStartError(
                f"the {SERVICE_MODULE} package is not importable; install the project (pip install -e .)")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        roots = [str(Path(home).expanduser().resolve()), *map(str, allowed_roots)]
        cmd = [sys.executable, "-m", SERVICE_MODULE, "--port", str(port), "--home", str(root),
               "--idle-exit-seconds", str(idle_exit_s)]
        for r in roots:
            cmd += ["--allow-root", r]
        with (root / "sim_gpu.log").open("ab") as log:  # the child keeps its own copy of the handle
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env=os.environ.copy())
        _STARTED.append(process)
        _wait_healthy(url, timeout_s, process)
        state.write_text(json.dumps({"url": url, "pid": process.pid, "home": str(root)}))
        return url

