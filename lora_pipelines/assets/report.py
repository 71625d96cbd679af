"""lora_quality_report: the daily report of usage, face match, success and fallback rates, with plots."""

import dagster as dg

from lora_pipelines.resources import AppDatabaseResource, GpuResource, ObjectStoreResource, pipeline_context


@dg.asset(group_name="metrics", kinds={"python", "pandas", "s3"}, deps=["generation_outputs"])
def lora_quality_report(
    context: dg.AssetExecutionContext, database: AppDatabaseResource, object_store: ObjectStoreResource,
    gpu: GpuResource,
) -> dg.MaterializeResult:
    """Markdown + HTML + PNG + CSV report under reports/{date}/, summary and plots shown here."""
    from lora_pipelines.services.report import build_report, utc_today

    ctx = pipeline_context(database, object_store, gpu)
    report = build_report(ctx, day=utc_today(), instance=context.instance)
    context.log.info(f"report written to {report.prefix}")
    return dg.MaterializeResult(metadata=report.dagster_metadata())
