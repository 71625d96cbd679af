"""The daily quality report and the daily LoRA retention."""

import dagster as dg

from lora_pipelines.jobs import lora_retention_job, report_job

daily_quality_report_schedule = dg.ScheduleDefinition(
    name="daily_quality_report_schedule",
    job=report_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

lora_retention_schedule = dg.ScheduleDefinition(
    name="lora_retention_schedule",
    job=lora_retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
