"""lora_quality_report: the daily report of usage, face match, success and fallback rates, with plots.

The Dagster half of the report: the check results this instance recorded go in as plain data, and the built
report comes back as materialization metadata.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from lora_pipelines.reporting.metrics import CHECK_TARGETS
from lora_pipelines.resources import PipelineResource

if TYPE_CHECKING:  # pandas and matplotlib load when a report is built, not with the code location
    from lora_pipelines.reporting.report import QualityReport
    from lora_pipelines.reporting.tables import CheckOutcome

CHECKED_ASSET = "generation_outputs"


class ReportConfig(dg.Config):
    since: str | None = None
    """Only jobs and trainings finished on or after this ISO datetime (UTC); all history when unset."""


@dg.asset(group_name="metrics", kinds={"python", "pandas", "s3"}, deps=["generation_outputs"])
def lora_quality_report(context: dg.AssetExecutionContext, config: ReportConfig,
                        pipeline: PipelineResource) -> dg.MaterializeResult:
    """Markdown + HTML + PNG + CSV report under reports/{date}/ (reports/{date}-N/ when the day has one already:
    a report never overwrites another), summary and plots shown here."""
    from lora_pipelines.reporting.report import build_report, free_report_prefix, utc_today

    ctx, day = pipeline.context, utc_today()
    since = datetime.fromisoformat(config.since) if config.since else None
    report = build_report(ctx, day=day, since=since, recorded_checks=latest_check_results(context.instance),
                          prefix=free_report_prefix(ctx.store, day))
    context.log.info(f"report written to {report.prefix}")
    return dg.MaterializeResult(metadata=report_metadata(report))


def latest_check_results(instance: dg.DagsterInstance) -> dict[str, "CheckOutcome"]:
    """The latest evaluation of each generation_outputs check recorded in `instance`, by check name."""
    from lora_pipelines.reporting.tables import CheckOutcome

    results = {}
    for target in CHECK_TARGETS:
        # DagsterInstance has no @public reader of check results in 1.13; this instance method (not the
        # event log storage's) is the one the UI's own loaders sit on
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey(CHECKED_ASSET), target.check)
        )
        evaluation = record.evaluation if record is not None else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue  # never run, planned or crashed: no result to show
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        rate = meta.get("rate")
        results[target.check] = CheckOutcome(
            source=f"dagster run {record.run_id[:8]}", passed=bool(evaluation.passed),
            severity=evaluation.severity.value, rate=None if rate is None or rate < 0 else float(rate),
            target=meta.get("target"), numerator=meta.get("numerator"), denominator=meta.get("denominator"),
            evaluated_at=datetime.fromtimestamp(record.create_timestamp, UTC).isoformat(timespec="seconds"),
            description=evaluation.description or "",
        )
    return results


def report_metadata(report: "QualityReport") -> dict[str, Any]:
    """Metadata for dg.MaterializeResult: summary (markdown + table), plot thumbnails, report URI, headline."""
    from lora_pipelines.reporting.plots import png_data_uri, thumbnail
    from lora_pipelines.reporting.rendering import markdown_table, plain

    summary = report.summary
    types = {"int64": "int", "float64": "float", "bool": "bool"}
    schema = dg.TableSchema(
        columns=[dg.TableColumn(str(c), types.get(str(summary[c].dtype), "string")) for c in summary.columns]
    )
    records = [dg.TableRecord({k: plain(v) for k, v in row.items()}) for row in summary.to_dict("records")]
    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.md(markdown_table(summary)),
        "summary_table": dg.MetadataValue.table(records=records, schema=schema),
        "checks": dg.MetadataValue.md(f"source: {report.checks_source}\n\n" + markdown_table(report.tables["checks"])),
        "report_uri": dg.MetadataValue.url(report.report_uri) if "://" in report.report_uri
        else dg.MetadataValue.path(report.report_uri),
        "prefix": report.prefix,
        "jobs": int(summary.attrs.get("jobs", 0)),
        "window": f"since {report.since.isoformat()}" if report.since else "all history",
        "check_results": dg.MetadataValue.json([
            {"check": row["check"], "passed": bool(row["passed"]), "severity": str(row["severity"]),
             "source": str(row["source"])} for row in report.tables["checks"].to_dict("records")]),
    }
    for name, png in report.plots.items():
        metadata[f"plot_{name}"] = dg.MetadataValue.md(f"![{name}]({png_data_uri(thumbnail(png))})")
    for name, value in report.headline.items():
        if value is not None:  # a float metadata value cannot be empty; nothing measured means no point
            metadata[name] = float(value)
    if report.satisfaction is not None:
        metadata["user_satisfaction_ratings"] = report.satisfaction.denominator
        if report.satisfaction.value is not None:
            metadata["user_satisfaction_rate"] = float(report.satisfaction.value)
    return metadata
