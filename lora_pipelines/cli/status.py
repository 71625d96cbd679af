"""`lora-pipelines status [--json]`: characters, LoRAs, generation jobs and the headline rates."""

from __future__ import annotations

import json

import click


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--limit", default=200, type=click.IntRange(1, 100_000), help="At most this many characters and jobs.")
def status(as_json: bool, limit: int) -> None:
    """Show what the system holds."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.services.status import system_status

    ctx = open_context()
    data = system_status(ctx, limit=limit)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"store: {data['store']['url']}")
    click.echo(f"{'id':>5}  {'name':<24} {'lora':<5} {'photos':>6}  training (per base model)")
    for c in data["characters"]:
        click.echo(f"{c['id']:>5}  {c['name'][:24]:<24} {'on' if c['lora_enabled'] else 'off':<5} "
                   f"{len(c['photo_keys']):>6}  {training_cell(c)}")
        reasons: dict[str, list[str]] = {}  # one line per reason, naming every base model it holds for
        for state in c["training"]:
            if state["state"] in ("waiting_for_photos", "failed"):
                reasons.setdefault(state["reason"], []).append(state["base_model"])
        for reason, models in reasons.items():
            click.echo(f"{'':>7}{', '.join(models)}: {reason}")
    click.echo(f"\n{'job':>5} {'char':>5} {'model':<14} {'status':<10} {'mode':<10} {'lora':>5}  "
               f"{'skipped reason':<22} output")
    for j in data["generation_jobs"]:
        click.echo(f"{j['id']:>5} {j['character_id']:>5} {j['model']:<14} {j['status']:<10} "
                   f"{str(j['mode'] or '-'):<10} {str(j['lora_model_id'] or '-'):>5}  "
                   f"{j['lora_skipped_reason'] or '':<22} {' '.join(j['output_urls']) or '-'}")
    m = data["metrics"]
    click.echo(
        f"\nLoRA usage {_pct(m['lora_usage_rate'])} · face match with LoRA {_pct(m['face_match_rate_with_lora'])}"
        f" / without {_pct(m['face_match_rate_without_lora'])} · success {_pct(m['generation_success_rate'])}"
        f" · fallback success {_pct(m['fallback_success_rate'])}"
    )
    f = data["face_match"]
    for lora in ("with_lora", "without_lora"):
        parts = [f"{kind.replace('_', '-')} dlib {_pct(f[lora][kind]['dlib']['rate'])} / sface "
                 f"{_pct(f[lora][kind]['sface']['rate'])}" for kind in ("held_out", "in_sample")]
        click.echo(f"face match {lora.replace('_', ' ')}: " + " · ".join(parts))
    click.echo(f"dlib and sface disagree on {_pct(f['recogniser_disagreement']['rate'])} of scored jobs")
    u = data["user_satisfaction"]
    click.echo(f"users reporting better consistency with LoRA: {_pct(u['rate'])} of {u['ratings']} rating"
               f"{'' if u['ratings'] == 1 else 's'} in {u['window_days']:g} days (target {u['target']:.0%})")


def training_cell(character: dict) -> str:
    """`flux: ready · z-image-turbo: training 40% · qwen-image: waiting 2/5 photos` (LoRA off: the ready ones)."""
    from lora_pipelines.services.training_state import TrainingState

    states = [TrainingState(**state) for state in character["training"]]
    if not character["lora_enabled"]:
        ready = [r["base_model"] for r in character["loras"] if r["status"] == "ready"]
        return "LoRA off" + (f" (ready, unused: {', '.join(ready)})" if ready else "")
    return " · ".join(f"{s.base_model}: {s.summary}" for s in states) or "-"
