"""`lora-pipelines lora list|activate|retention`: a character's LoRA versions, which one is used, and clean-up."""

from __future__ import annotations

import json

import click


def _context():
    from lora_pipelines.services.context import PipelineContext

    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    return ctx


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.group()
def lora() -> None:
    """LoRA versions: list them, choose the one generation uses, archive old ones."""


@lora.command("list")
@click.option("--character", "character_id", required=True, type=int, help="Character id (see `status`).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_command(character_id: int, as_json: bool) -> None:
    """Every LoRA of a character: status, validation score, which one is active (*) and why others are not."""
    from lora_pipelines.services.lora_versions import activation_history, list_versions
    from lora_pipelines.store.rows import RecordNotFoundError

    ctx = _context()
    try:
        versions = list_versions(ctx, character_id)
    except RecordNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    history = activation_history(ctx, character_id)
    if as_json:
        click.echo(json.dumps({
            "character_id": character_id, "loras": [v.as_dict() for v in versions],
            "activations": [{"id": a.id, "lora_model_id": a.lora_model_id, "base_model": a.base_model,
                             "previous_lora_model_id": a.previous_lora_model_id, "kind": a.kind,
                             "by": a.activated_by, "reason": a.reason, "at": a.created_at.isoformat()}
                            for a in history],
        }, indent=2))
        return
    if not versions:
        click.echo(f"character {character_id} has no LoRA yet")
        return
    click.echo(f"{'':1} {'id':>5}  {'base model':<14} {'status':<9} {'score':>6} {'step':>6}  {'ready at':<20} note")
    for v in versions:
        d = v.as_dict()
        note = d["gate_reason"] or d["error"] or ("pinned by a pending job" if v.pinned else "")
        click.echo(f"{'*' if v.active else '':1} {d['id']:>5}  {d['base_model']:<14} {d['status']:<9} "
                   f"{_score(d['validation_score']):>6} {str(d['chosen_step'] or '-'):>6}  "
                   f"{(d['finished_at'] or '-')[:19]:<20} {note}")
    click.echo("* = the LoRA generation uses for that base model")
    if history:
        click.echo("\nactivations (newest first):")
        for a in history[:10]:
            previous = f" (was {a.previous_lora_model_id})" if a.previous_lora_model_id else ""
            click.echo(f"  {a.created_at.isoformat(timespec='seconds')}  {a.base_model:<14} LoRA {a.lora_model_id}"
                       f"{previous} by {a.activated_by}: {a.reason}")


@lora.command()
@click.argument("lora_id", type=int)
@click.option("--reason", required=True, help="Why (kept with the activation).")
@click.option("--by", default=None, help="Who (default: the login name).")
def activate(lora_id: int, reason: str, by: str | None) -> None:
    """Make a ready LoRA the one generation uses for its character and base model (roll back or forward)."""
    from lora_pipelines.services.feedback import default_rater
    from lora_pipelines.services.lora_versions import activate as activate_lora
    from lora_pipelines.store.rows import RecordNotFoundError

    ctx = _context()
    try:
        activation = activate_lora(ctx, lora_id, by=by or default_rater(), reason=reason)
    except (RecordNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc).strip('"')) from None
    previous = (f"; LoRA {activation.previous_lora_model_id} was in use"
                if activation.previous_lora_model_id not in (None, lora_id) else "")
    click.echo(f"LoRA {lora_id} is now used for character {activation.character_id} on {activation.base_model}"
               f"{previous} (activation {activation.id} by {activation.activated_by})")


@lora.command()
@click.option("--dry-run", is_flag=True, help="List what would be archived; change nothing.")
@click.option("--older-than-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Archive LoRAs not in use for longer than this (default LORA_PIPELINES_LORA_RETENTION_DAYS, 30).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def retention(dry_run: bool, older_than_days: float | None, as_json: bool) -> None:
    """Archive LoRAs that are not active, not pinned by pending jobs and idle longer than the age (what the
    scheduled lora_retention job runs)."""
    from lora_pipelines.services.retention import run_retention

    ctx = _context()
    try:
        report = run_retention(ctx, dry_run=dry_run, max_age_days=older_than_days)
    finally:
        ctx.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    verb = "would archive" if dry_run else "archived"
    click.echo(f"{verb} {len(report.archived)} LoRA(s) idle for more than {report.max_age_days:g} days")
    for item in report.archived:
        where = f", volume {len(item.volume_removed)}, pod {item.pod}" if not dry_run and item.pod else ""
        click.echo(f"  LoRA {item.lora_model_id} (character {item.character_id}, {item.base_model}) idle since "
                   f"{item.idle_since or '-'}: {len(item.files)} file(s){where}"
                   + (f" — {item.error}" if item.error else ""))
    for item in report.skipped:
        click.echo(f"  LoRA {item.lora_model_id}: {item.action}")
    if report.kept:
        click.echo("kept: " + ", ".join(f"{n} {reason}" for reason, n in sorted(report.kept.items())))
