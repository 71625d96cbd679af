"""`lora-pipelines sim-gpu ...`: run or locate the simulated GPU service."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click


@click.group("sim-gpu")
def sim_gpu() -> None:
    """The simulated GPU service (Modal routes + ComfyUI subset on localhost)."""


@sim_gpu.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8189, show_default=True)
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="State folder (trained files, models/loras, crowd/); default $LORA_PIPELINES_HOME/sim_gpu.")
@click.option("--allow-root", "allow_roots", multiple=True, type=click.Path(path_type=Path),
              help="Extra folder that file:// dataset/LoRA URLs may read (home is always allowed).")
@click.option("--faults", default=None, envvar="LORA_PIPELINES_SIM_FAULTS",
              help='Fault JSON or a file holding it, e.g. {"endpoints": {"flux-lora": {"error_rate": 0.3}}}.')
@click.option("--training-seconds", type=float, default=1.5, show_default=True)
def serve(host: str, port: int, home: Path | None, allow_roots: tuple[Path, ...], faults: str | None,
          training_seconds: float) -> None:
    """Serve until interrupted.

    Modal-Key/Modal-Secret are enforced when LORA_PIPELINES_SIM_MODAL_KEY/_SECRET are set."""
    from lora_pipelines.gpu.sim_launcher import sim_home
    from lora_pipelines.settings import load_settings
    from sim_gpu.config import SimConfig, load_faults
    from sim_gpu.server import serve as run

    home = home or sim_home(load_settings().resolved_home)
    config = SimConfig(home=home, allowed_roots=list(allow_roots), training_seconds=training_seconds,
                       faults=load_faults(faults), modal_key=os.environ.get("LORA_PIPELINES_SIM_MODAL_KEY"),
                       modal_secret=os.environ.get("LORA_PIPELINES_SIM_MODAL_SECRET"))
    click.echo(f"simulated GPU service on http://{host}:{port} (home {config.home}); use it with "
               f"LORA_PIPELINES_SIM_GPU_URL=http://{host}:{port}")
    run(config, host=host, port=port)


@sim_gpu.command()
def url() -> None:
    """Print the URL of this home's simulated service, starting it when it is not running."""
    from lora_pipelines.gpu.sim_launcher import ensure_sim_gpu_running
    from lora_pipelines.settings import load_settings

    click.echo(ensure_sim_gpu_running(load_settings().resolved_home))


@sim_gpu.command()
@click.option("--url", "base_url", default=None, help="Service URL; default: this home's service.")
def stats(base_url: str | None) -> None:
    """Request counts per endpoint and the faults in force."""
    import httpx

    from lora_pipelines.gpu.sim_launcher import ensure_sim_gpu_running
    from lora_pipelines.settings import load_settings

    base_url = base_url or ensure_sim_gpu_running(load_settings().resolved_home)
    click.echo(json.dumps(httpx.get(f"{base_url}/_sim/stats", timeout=10).json(), indent=2))
