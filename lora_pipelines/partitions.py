"""Partitions: one per character (dynamic, added by the new_characters sensor) × base model (static)."""

import dagster as dg

from lora_pipelines.domain.base_models import BASE_MODELS

characters_partitions = dg.DynamicPartitionsDefinition(name="characters")
base_model_partitions = dg.StaticPartitionsDefinition(list(BASE_MODELS))
character_model_partitions = dg.MultiPartitionsDefinition(
    {"base_model": base_model_partitions, "character": characters_partitions}
)


def partition_key(character_id: int, base_model: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"character": str(character_id), "base_model": base_model})


def split_partition_key(context: dg.AssetExecutionContext) -> tuple[int, str]:
    keys = context.partition_key.keys_by_dimension
    return int(keys["character"]), keys["base_model"]
