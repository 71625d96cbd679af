"""lora_pipelines: per-character LoRA training and LoRA-aware generation, orchestrated by Dagster."""
