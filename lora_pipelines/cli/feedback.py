"""`lora-pipelines feedback --job ID --rating R [--note T]` and `lora-pipelines feedback import FILE.csv`."""

from __future__ import annotations

from pathlib import Path

import click


def _context():
    from lora_pipelines.services.context import PipelineContext

    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    return ctx


@click.group(invoke_without_command=True)
@click.option("--job", "job_id", type=int, default=None, help="Generation job id (see `status`).")
@click.option("--rating", default=None,
              help="Likeness compared with generating without the LoRA: better, same, worse, or a score 1-5.")
@click.option("--note", default=None, help="Optional free text.")
@click.option("--by", default=None, help="Who rates (default: the login name).")
@click.pass_context
def feedback(click_ctx: click.Context, job_id: int | None, rating: str | None, note: str | None,
             by: str | None) -> None:
    """Record a user's verdict on a generated image (or `feedback import FILE.csv` for many)."""
    if click_ctx.invoked_subcommand is not None:
        if job_id is not None or rating is not None:
            raise click.UsageError("--job/--rating rate one job; `feedback import FILE` reads them from a file")
        return
    if job_id is None or rating is None:
        raise click.UsageError("give --job ID and --rating R (or `feedback import FILE.csv`)")
    from lora_pipelines.services.feedback import FeedbackRefused, record_feedback

    ctx = _context()
    try:
        saved = record_feedback(ctx, job_id, rating, note=note, by=by)
    except FeedbackRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"recorded: job {saved.job_id} rated {saved.rating} ({saved.verdict}) by {saved.rated_by}")


@feedback.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--by", default=None, help="Who, for rows without a rated_by column (default: the login name).")
def import_command(file: Path, by: str | None) -> None:
    """Import ratings from a CSV (header: job_id,rating[,note,rated_by,rated_at]); all or nothing."""
    from lora_pipelines.domain.feedback import FeedbackCsvError
    from lora_pipelines.services.feedback import FeedbackRefused, import_feedback

    ctx = _context()
    try:
        result = import_feedback(ctx, file, by=by)
    except (FeedbackRefused, FeedbackCsvError) as exc:
        raise click.ClickException(f"{exc}; nothing was imported") from None
    click.echo(f"imported {result.ratings} rating(s) from {file.name} ({result.lora_jobs} of LoRA generations)")
