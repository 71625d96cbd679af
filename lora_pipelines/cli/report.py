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
    """Build today's LoRA quality report (markdown, HTML, plots, CSV) in the object store."""
    since = parse_since(since_text)
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.reporting.report import build_report, utc_today

    ctx = open_context()
    built = build_report(ctx, day=utc_today(), since=since)
    click.echo(f"report: {built.report_uri}")
    click.echo(f"markdown: {ctx.store.uri(built.prefix + '/report.md')}")
    click.echo(f"window: {'since ' + built.since.isoformat() if built.since else 'all history'}; "
               f"{int(built.summary.attrs.get('jobs', 0))} finished jobs")  # fmt: skip
    for name, value in built.headline.items():
        click.echo(f"  {name:<30} {_pct(value)}")
    for row in built.tables["checks"].to_dict("records"):
        outcome = "passed" if row["passed"] else "FAILED"
        click.echo(f"  check {row['check']:<24} {outcome} ({row['severity']}, {row['source']})")
