"""The code location: workspace.yaml and [tool.dagster] load `defs`, which Dagster calls when it loads the location
(nothing reads the environment at import). Tests call `defs()` for definitions on their own environment."""

import dagster as dg

from lora_pipelines.assets.generation import generation_outputs
from lora_pipelines.assets.report import lora_quality_report
from lora_pipelines.assets.retention import lora_retention
from lora_pipelines.assets.training import lora_artifact, trained_lora, training_dataset
from lora_pipelines.checks.feedback import FEEDBACK_CHECKS
from lora_pipelines.checks.generation import GENERATION_CHECKS
from lora_pipelines.jobs import generation_job, lora_retention_job, report_job, training_job
from lora_pipelines.partitions import character_model_partitions, trained_partitions, with_partitions
from lora_pipelines.resources import PipelineResource
from lora_pipelines.schedules import daily_quality_report_schedule, lora_retention_schedule
from lora_pipelines.sensors.generation import pending_generations_sensor
from lora_pipelines.sensors.training import new_characters_sensor, training_completion_sensor
from lora_pipelines.sensors.training_failures import training_failures_sensor
from lora_pipelines.settings import load_settings


@dg.definitions
def defs() -> dg.Definitions:
    # training partitions: only the base models characters are trained for (the sensors' setting)
    trained = trained_partitions(load_settings().train_base_model_list)
    training = [with_partitions(asset, trained) if asset.partitions_def == character_model_partitions else asset
                for asset in (training_dataset, trained_lora, lora_artifact)]
    return dg.Definitions(
        assets=[*training, generation_outputs, lora_quality_report, lora_retention],
        asset_checks=[*GENERATION_CHECKS, *FEEDBACK_CHECKS],
        jobs=[training_job, generation_job, report_job, lora_retention_job],
        sensors=[new_characters_sensor, training_completion_sensor, pending_generations_sensor,
                 training_failures_sensor],
        schedules=[daily_quality_report_schedule, lora_retention_schedule],
        resources={"pipeline": PipelineResource.from_environment()},
    )
