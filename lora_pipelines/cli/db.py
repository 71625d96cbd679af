"""`lora-pipelines db ...`: apply or undo the app database's migrations."""

from __future__ import annotations

import click

from lora_pipelines.settings import load_settings
from lora_pipelines.store.database import Database, display_url


def _database(*, create: bool) -> Database:
    """The app database; without `create`, a home that has none is a one-line error (nothing is made)."""
    from lora_pipelines.cli.context import has_data
    from lora_pipelines.home import no_data_message

    settings = load_settings()
    if not has_data(settings):
        if not create:
            raise click.ClickException(no_data_message(settings.home_location))
        click.echo(f"new home {settings.resolved_home}", err=True)
    return Database.from_settings(settings)


@click.group()
def db() -> None:
    """The app database (LORA_PIPELINES_DATABASE_URL, or SQLite under LORA_PIPELINES_HOME)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up to this revision.")
def upgrade(revision: str) -> None:
    """Apply migrations."""
    database = _database(create=True)
    try:
        current = database.upgrade(revision)
    finally:
        database.dispose()
    click.echo(f"{display_url(database.url)} is at revision {current}")


@db.command()
@click.option("--revision", required=True, help="Migrate down to this revision ('base' removes every table).")
def downgrade(revision: str) -> None:
    """Undo migrations."""
    database = _database(create=False)
    try:
        current = database.downgrade(revision)
    finally:
        database.dispose()
    click.echo(f"{display_url(database.url)} is at revision {current or 'base'}")


@db.command()
def current() -> None:
    """Print the database's revision and the newest one available."""
    database = _database(create=False)
    try:
        click.echo(f"{display_url(database.url)}: revision {database.current_revision() or 'base'} "
                   f"(head {database.head_revision()})")  # fmt: skip
    finally:
        database.dispose()
