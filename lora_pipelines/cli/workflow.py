"""`lora-pipelines workflow build ...`: print a ComfyUI API-format workflow, optionally with a LoRA inserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.domain.prompts import InvalidPromptError, apply_trigger_word
from lora_pipelines.domain.safetensors_inspect import InvalidLoraFileError, inspect_lora_file
from lora_pipelines.workflows.builders import (
    RETIRED_WORKFLOWS,
    WORKFLOWS,
    InvalidWorkflowError,
    build_workflow,
    load_workflow_template,
    workflow_base_model,
)
from lora_pipelines.workflows.lora import insert_lora


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group("workflow")
def workflow() -> None:
    """Build ComfyUI workflows."""


@workflow.command("build")
# Retired names stay accepted here so that they get build_workflow's explanation, not a bare "invalid choice".
@click.option("--workflow", "name", required=True, type=click.Choice((*WORKFLOWS, *RETIRED_WORKFLOWS)),
              help=f"Named workflow to build: {', '.join(WORKFLOWS)}.")
@click.option("--prompt", required=True, help="Positive prompt (plain text).")
@click.option("--negative-prompt", default="", help="Negative prompt, where the workflow has one.")
@click.option("--lora", "lora_file", type=click.Path(exists=True, dir_okay=False), help="LoRA .safetensors to insert.")
@click.option("--strength", type=float, default=1.0, show_default=True, help="LoRA strength for the model.")
@click.option("--clip-strength", type=float, default=None,
              help="LoRA strength for CLIP (0 = model-only). Default: 0 for Z-Image/Qwen, else --strength.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="Sampling steps (the workflow's default when unset).")
@click.option("--width", type=int, default=1024, show_default=True)
@click.option("--height", type=int, default=1024, show_default=True)
@click.option("--reference-image", default=None, help="File name in the pod's input/ folder (PuLID workflows).")
@click.option("--template", type=click.Path(exists=True, dir_okay=False),
              help="Your own API-format JSON replacing the built graph (e.g. your Danrisi workflow).")
def build(name: str, prompt: str, negative_prompt: str, lora_file: str | None, strength: float,
          clip_strength: float | None, seed: int, steps: int | None, width: int, height: int,
          reference_image: str | None, template: str | None) -> None:
    """Print the API-format JSON of the --workflow graph; with --lora, the LoRA's trigger word opens the prompt."""
    try:
        inspection = inspect_lora_file(lora_file) if lora_file else None
        if inspection is not None and inspection.trigger_word:
            # as every LoRA generation does: without its trigger word a character LoRA barely shows
            prompt = apply_trigger_word(prompt, inspection.trigger_word)
        template_graph = load_workflow_template(template) if template else None
        graph = build_workflow(name, prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, width=width,
                               height=height, reference_image=reference_image, template=template_graph)
        if lora_file and inspection is not None:
            expected = workflow_base_model(name)
            if inspection.base_model != expected:
                _fail(f"{lora_file} is a {inspection.base_model} LoRA (from {inspection.detected_from}); "
                      f"workflow {name} runs {expected}")
            if clip_strength is None:  # the model's default: model-only where the text encoder is never trained
                clip_strength = 0.0 if get_model(expected).default_strength_clip == 0 else strength
            graph = insert_lora(graph, f"{Path(lora_file).stem}.safetensors", strength, clip_strength)
    except (InvalidWorkflowError, InvalidLoraFileError, InvalidPromptError) as exc:
        _fail(str(exc))
    click.echo(json.dumps(graph, indent=2))
