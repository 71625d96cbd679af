"""`lora-pipelines inspect-lora FILE`: what a LoRA file is for, read from its safetensors header."""

from __future__ import annotations

import json
import sys

import click

from lora_pipelines.domain.safetensors_inspect import ForeignLoraFamilyError, InvalidLoraFileError, inspect_lora_file


@click.command("inspect-lora")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def inspect_lora(file: str) -> None:
    """Print base model, format, rank, trigger word, size and sha256 of a LoRA .safetensors FILE as JSON."""
    try:
        inspection = inspect_lora_file(file)
    except ForeignLoraFamilyError as exc:
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(2)
    except InvalidLoraFileError as exc:
        click.echo(f"error: {exc} ({file} is not a readable LoRA .safetensors file)", err=True)
        sys.exit(2)
    click.echo(json.dumps(inspection.summary(), indent=2))
