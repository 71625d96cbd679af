"""The PipelineContext a command works on: the existing home's data, or a new home only where a command makes one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from lora_pipelines.home import no_data_message
from lora_pipelines.settings import Settings, load_settings

if TYPE_CHECKING:
    from lora_pipelines.services.context import PipelineContext


def has_data(settings: Settings) -> bool:
    """An app database exists: a configured URL, or the home's SQLite file."""
    path = settings.default_database_path
    return path is None or path.is_file()


def open_context(*, create: bool = False, settings: Settings | None = None) -> PipelineContext:
    """The migrated context of this home. Without `create`, a home without data is a one-line error naming where
    it was looked for; with it, a new home is made and announced (never silently)."""
    from lora_pipelines.services.context import PipelineContext

    settings = settings or load_settings()
    if not has_data(settings):
        if not create:
            raise click.ClickException(no_data_message(settings.home_location))
        location = settings.home_location
        how = "LORA_PIPELINES_HOME" if location.explicit else "set LORA_PIPELINES_HOME to use another folder"
        click.echo(f"new home {location.path} ({how})", err=True)
    ctx = PipelineContext.from_settings(settings)
    ctx.db.upgrade()
    return ctx
