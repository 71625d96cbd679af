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
    "lora": "lora_pipelines.cli.lora:lora",
    "feedback": "lora_pipelines.cli.feedback:feedback",
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

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = operator_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def operator_error(exc: BaseException) -> str | None:
    """A one-line message with what to check, for failures caused by the configured services (no traceback)."""
    import sqlalchemy.exc

    from lora_pipelines.store.objects import ObjectStoreError

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        from lora_pipelines.settings import load_settings
        from lora_pipelines.store.database import display_url

        reason = str(exc.orig or exc).strip().splitlines()[0]
        return (f"app database {display_url(load_settings().resolved_database_url)} failed: {reason}. "
                "Check LORA_PIPELINES_DATABASE_URL (unset, it is SQLite under LORA_PIPELINES_HOME).")
    if isinstance(exc, ObjectStoreError):
        return (f"{exc}. Check LORA_PIPELINES_STORE_URL, LORA_PIPELINES_S3_ENDPOINT_URL, that the bucket exists "
                "and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.")
    return None


@click.group(cls=LazyGroup)
def main() -> None:
    """Per-character LoRA training and LoRA-aware generation."""
