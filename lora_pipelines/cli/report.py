"""`lora-pipelines report [--since DATE]`: build today's LoRA quality report and say where it is."""

from __future__ import annotations

from datetime import UTC, date, datetime

import click


def parse_since(value: str | None) -> datetime | None:
    """YYYY-MM-DD (midnight UTC) or an ISO datetime (UTC when it names no timezone); not in the future."""
    if value is None:
        return None
    text = value.strip()
    try:
        parsed = (
            datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date; use YYYY-MM-DD or an ISO datetime such as 2025-05-01T12:00:00+00:00",
            param_hint="--since",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > datetime.now(UTC):
        raise click.BadParameter(f"{value!r} is in the future: the report would be empty", param_hint="--since")
    return parsed


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@click.command()
@click.option("--since", "since_text", metavar="DATE", default=None,
              help="Only jobs and trainings finished on or after this UTC date (YYYY-MM-DD) or ISO datetime.")
def report(since_text: str | None) -> None:
    """Build the LoRA quality report (markdown, HTML, plots, CSV) in the object store, as a report_job run on this
    home's Dagster instance (its materialization is recorded); a report never overwrites another."""
    since = parse_since(since_text)
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.jobs.cli_runs import failure_message, materialization_metadata, run_job_here
    from lora_pipelines.reporting.tables import RATES

    ctx = open_context()
    config = {"ops": {"lora_quality_report": {"config": {"since": since.isoformat() if since else None}}}}
    result = run_job_here(ctx.settings, "report_job", run_config=config)
    meta = materialization_metadata(result, "lora_quality_report")
    if not result.success or not meta:
        raise click.ClickException(f"report_job run {result.run_id} failed: {failure_message(result)}")
    click.echo(f"report: {meta['report_uri']}")
    click.echo(f"markdown: {ctx.store.uri(meta['prefix'] + '/report.md')}")
    click.echo(f"window: {meta['window']}; {meta['jobs']} finished jobs")
    click.echo(f"recorded: report_job run {result.run_id} on {ctx.settings.dagster_home}")
    for name in RATES:
        click.echo(f"  {name:<30} {_pct(meta.get(name))}")
    for row in meta["check_results"]:
        outcome = "passed" if row["passed"] else "FAILED"
        click.echo(f"  check {row['check']:<24} {outcome} ({row['severity']}, {row['source']})")
