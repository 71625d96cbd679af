"""Asset jobs: training per character × base model, generation batches, the quality report, LoRA retention.

Training and generation runs execute their steps in the run's own process: the steps run one after another
anyway, and a process per step costs seconds of start-up (and CPU) per step on every run."""

import dagster as dg

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("training_dataset", "trained_lora", "lora_artifact"),
    description="Dataset → GPU training submitted → verified artifact (once the training call has ended) for one "
                "character × base model partition.",
    executor_def=dg.in_process_executor,
)
generation_job = dg.define_asset_job(
    "generation_job",
    selection=dg.AssetSelection.assets("generation_outputs"),
    description="Generate a batch of pending generation jobs, with LoRA when one can be used.",
    executor_def=dg.in_process_executor,
)
report_job = dg.define_asset_job(
    "report_job",
    selection=dg.AssetSelection.assets("lora_quality_report"),
    description="The LoRA quality report: tables and plots from the database and check results.",
)
lora_retention_job = dg.define_asset_job(
    "lora_retention_job",
    selection=dg.AssetSelection.assets("lora_retention"),
    description="Archive LoRAs nothing uses any more; run with dry_run: true to list them only.",
)
