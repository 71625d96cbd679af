"""Asset jobs: training per character × base model, generation batches, the quality report, LoRA retention."""

import dagster as dg

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("training_dataset", "trained_lora", "lora_artifact"),
    description="Dataset → GPU training → verified artifact for one character × base model partition.",
)
generation_job = dg.define_asset_job(
    "generation_job",
    selection=dg.AssetSelection.assets("generation_outputs"),
    description="Generate a batch of pending generation jobs, with LoRA when one can be used.",
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
