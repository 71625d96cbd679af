"""`lora-pipelines demo`: the whole system end to end on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import click


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@click.command()
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="LORA_PIPELINES_HOME for the demo (default: the home every command finds, see README).")
def demo(home: Path | None) -> None:
    """Create demo characters, train their LoRAs, generate with and without them, check, and report."""
    import os

    from lora_pipelines.demo.scenario import run_demo
    from lora_pipelines.settings import load_settings

    if home is None:
        location = load_settings().home_location
        home = location.path
        if location.source == "new":
            click.echo(f"new home {home} (set LORA_PIPELINES_HOME to use another folder)", err=True)
    home = home.resolve()
    result = run_demo(home)
    m = result["metrics"]
    click.echo("")
    click.echo(f"report:                       {result['report']}")
    click.echo(f"LoRA usage rate:              {_pct(m['lora_usage_rate'])}")
    click.echo(f"face match with LoRA:         {_pct(m['face_match_rate_with_lora'])}")
    click.echo(f"face match without LoRA:      {_pct(m['face_match_rate_without_lora'])}")
    click.echo(f"generation success rate:      {_pct(m['generation_success_rate'])}")
    click.echo(f"fallback success rate:        {_pct(m['fallback_success_rate'])}")
    u = result.get("user_satisfaction")
    if u is not None:
        click.echo(f"users reporting better:       {_pct(u['rate'])} of {u['ratings']} ratings of LoRA generations "
                   f"(target {u['target']:.0%})")
    click.echo("")
    click.echo("face match per character (dlib / sface; held-out photos were never trained on):")
    for name, split in result["characters"].items():
        for lora in ("with_lora", "without_lora"):
            parts = []
            for kind in ("held_out", "in_sample"):
                dlib, sface = split[lora][kind]["dlib"], split[lora][kind]["sface"]
                if dlib["scored"] or sface["scored"]:
                    parts.append(f"{kind.replace('_', '-')} {_pct(dlib['rate'])} / {_pct(sface['rate'])} "
                                 f"({dlib['scored']} scored)")
            click.echo(f"  {name:<14} {lora.replace('_', ' '):<13} {' · '.join(parts) or 'no generations'}")
    agree = result["recognisers"]
    gap = (None if agree["dlib_match_rate"] is None or agree["sface_match_rate"] is None
           else abs(agree["dlib_match_rate"] - agree["sface_match_rate"]))
    click.echo(f"recognisers on the {agree['scored_by_both']} jobs both scored: dlib {_pct(agree['dlib_match_rate'])}, "
               f"sface {_pct(agree['sface_match_rate'])} (difference {'n/a' if gap is None else f'{gap:.3f}'}), "
               f"disagree on {agree['disagree']}")
    where = " (from the repository folder)" if _checkout() else ""
    click.echo(f"took {result['seconds']}s. See it in the UI{where}: {ui_command(home)}")
    kept = [name for name in
            ("LORA_PIPELINES_DATABASE_URL", "LORA_PIPELINES_STORE_URL", "LORA_PIPELINES_S3_ENDPOINT_URL")
            if os.environ.get(name)]
    if kept:
        click.echo(f"keep {', '.join(kept)} set for it too, or its sensors read another app database and store.")


def ui_command(home: Path) -> str:
    """The `dagster dev` line that shows this demo: the same DAGSTER_HOME and, when it is not the default, home.

    In a checkout it is the README's command (workspace.yaml); an installed package has no workspace.yaml, so
    there it names the definitions module, which works from any folder."""
    import os
    import sys

    from lora_pipelines.home import checkout_root, locate_home

    # the README's command runs in the checkout folder, where every command finds the checkout's home by itself
    found = locate_home(None, cwd=checkout_root() or Path.cwd()).path
    prefix = "" if home == found else f"LORA_PIPELINES_HOME={home} "
    if _checkout():
        command = ".venv/bin/dagster dev -w workspace.yaml"
    else:
        dagster = Path(sys.executable).parent / "dagster"
        command = f"{dagster if dagster.exists() else 'dagster'} dev -m lora_pipelines.definitions"
    return f"{prefix}DAGSTER_HOME={os.environ['DAGSTER_HOME']} {command}"


def _checkout() -> bool:
    """Whether lora_pipelines runs from a source checkout (workspace.yaml beside the package)."""
    import lora_pipelines

    return (Path(lora_pipelines.__file__).resolve().parent.parent / "workspace.yaml").is_file()
