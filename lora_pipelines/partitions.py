"""Partitions: one per character (dynamic, added by the new_characters sensor) × base model (static).

The base models are the ones characters are trained for (LORA_PIPELINES_TRAIN_BASE_MODELS, the setting the
sensors use): `definitions.py` gives the training assets `trained_partitions(...)` when the code location loads.
The module-level definition, with every known base model, is what the asset decorators start from.
"""

from collections.abc import Sequence

import dagster as dg

from lora_pipelines.domain.base_models import BASE_MODELS, validate_base_model

characters_partitions = dg.DynamicPartitionsDefinition(name="characters")
base_model_partitions = dg.StaticPartitionsDefinition(list(BASE_MODELS))
character_model_partitions = dg.MultiPartitionsDefinition(
    {"base_model": base_model_partitions, "character": characters_partitions}
)


def trained_partitions(base_models: Sequence[str]) -> dg.MultiPartitionsDefinition:
    """character × the base models characters are trained for."""
    if not base_models:
        raise ValueError("LORA_PIPELINES_TRAIN_BASE_MODELS names no base model")
    models = [validate_base_model(name) for name in base_models]
    return dg.MultiPartitionsDefinition(
        {"base_model": dg.StaticPartitionsDefinition(models), "character": characters_partitions}
    )


def with_partitions(asset: dg.AssetsDefinition, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The asset on these partitions instead of the ones it was declared with."""
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=partitions))


def partition_key(character_id: int, base_model: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"character": str(character_id), "base_model": base_model})


def split_partition_key(context: dg.AssetExecutionContext) -> tuple[int, str]:
    keys = context.partition_key.keys_by_dimension
    return int(keys["character"]), keys["base_model"]
