"""The daily quality report."""

import dagster as dg

from lora_pipelines.jobs import report_job

daily_quality_report_schedule = dg.ScheduleDefinition(
    name="daily_quality_report_schedule",
    job=report_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
