"""`lora-pipelines ...`: one click group; each command lives in its own module and is imported on use."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command or group
COMMANDS = {
    "db": "lora_pipelines.cli.db:db",
    "inspect-lora": "lora_pipelines.cli.inspect_lora:inspect_lora",
    "workflow": "lora_pipelines.cli.workflow:workflow",
    "face-match": "lora_pipelines.cli.face_match:face_match",
    "sim-gpu": "lora_pipelines.cli.sim_gpu:sim_gpu",
    "character": "lora_pipelines.cli.character:character",
    "generate": "lora_pipelines.cli.generate:generate",
    "report": "lora_pipelines.cli.report:report",
    "status": "lora_pipelines.cli.status:status",
    "demo": "lora_pipelines.cli.demo:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
def main() -> None:
    """Per-character LoRA training and LoRA-aware generation."""
