"""Running the service: `python -m sim_gpu` (a process of its own, as the launcher starts it), `serve()` in
this process, or `SimGpuServer` in a uvicorn thread for tests."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sim_gpu.app import create_app
from sim_gpu.config import FAULTS_ENV, SIM_COMFYUI_VERSION, SimConfig, load_faults
from sim_gpu.faults import FaultConfig, FaultInjector


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim_gpu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8189)
    parser.add_argument("--home", type=Path,
                        default=Path(os.environ.get("LORA_PIPELINES_HOME", ".lora_pipelines")) / "sim_gpu")
    parser.add_argument("--allow-root", action="append", default=[], type=Path, help="folder file:// URLs may read")
    parser.add_argument("--faults", default=os.environ.get(FAULTS_ENV), help="fault JSON, or a file holding it")
    parser.add_argument("--training-seconds", type=float, default=1.5)
    parser.add_argument("--comfyui-version", default=SIM_COMFYUI_VERSION, help="what /system_stats reports")
    parser.add_argument("--idle-exit-seconds", type=float, default=None,
                        help="exit after this long without requests, or as soon as --home is deleted")
    args = parser.parse_args(argv)
    serve(SimConfig(home=args.home, allowed_roots=args.allow_root, training_seconds=args.training_seconds,
                    faults=load_faults(args.faults), comfyui_version=args.comfyui_version,
                    modal_key=os.environ.get("LORA_PIPELINES_SIM_MODAL_KEY"),
                    modal_secret=os.environ.get("LORA_PIPELINES_SIM_MODAL_SECRET")),
          host=args.host, port=args.port, idle_exit_s=args.idle_exit_seconds)


def serve(config: SimConfig, *, host: str = "127.0.0.1", port: int = 8189, idle_exit_s: float | None = None) -> None:
    """Serve until interrupted (or, with `idle_exit_s`, until idle that long or the home is deleted)."""
    import uvicorn

    app = create_app(config)
    if idle_exit_s:
        _exit_when_idle(config.home, idle_exit_s, app.state.sim.faults)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


def _exit_when_idle(home: Path, idle_s: float, injector: FaultInjector) -> None:
    """For services started on demand: nobody stops them, so they stop themselves."""
    started = time.monotonic()

    def watch() -> None:
        while True:
            time.sleep(min(5.0, idle_s / 4))
            last = max(started, injector.last_request)
            if not home.exists() or time.monotonic() - last > idle_s:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="sim-idle-exit").start()


class SimGpuServer:
    """The service in a uvicorn thread of this process: `with SimGpuServer(home) as sim: sim.url`."""

    def __init__(self, home: Path, *, port: int | None = None, allowed_roots: Sequence[Path] = (),
                 modal_key: str | None = None, modal_secret: str | None = None, training_seconds: float = 1.0,
                 faults: FaultConfig | None = None) -> None:
        self.config = SimConfig(home=Path(home), allowed_roots=list(allowed_roots), modal_key=modal_key,
                                modal_secret=modal_secret, training_seconds=training_seconds,
                                faults=faults or FaultConfig())
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def home(self) -> Path:
        return self.config.home

    def start(self, timeout_s: float = 30.0) -> SimGpuServer:
        import uvicorn

        self.app = create_app(self.config)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="sim-gpu-uvicorn")
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:  # set once the socket listens
            if not self._thread.is_alive():
                raise RuntimeError(f"simulated GPU service could not start on {self.url} (port taken?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulated GPU service did not start on {self.url} within {timeout_s:.0f}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SimGpuServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
