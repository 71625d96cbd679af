"""`lora-pipelines db ...`: apply or undo the app database's migrations."""

from __future__ import annotations

import click

from lora_pipelines.settings import load_settings
from lora_pipelines.store.database import Database, display_url


def _database() -> Database:
    return Database.from_settings(load_settings())


@click.group()
def db() -> None:
    """The app database (LORA_PIPELINES_DATABASE_URL, or SQLite under LORA_PIPELINES_HOME)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up to this revision.")
def upgrade(revision: str) -> None:
    """Apply migrations."""
    database = _database()
    try:
        current = database.upgrade(revision)
    finally:
        database.dispose()
    click.echo(f"{display_url(database.url)} is at revision {current}")


@db.command()
@click.option("--revision", required=True, help="Migrate down to this revision ('base' removes every table).")
def downgrade(revision: str) -> None:
    """Undo migrations."""
    database = _database()
    try:
        current = database.downgrade(revision)
    finally:
        database.dispose()
    click.echo(f"{display_url(database.url)} is at revision {current or 'base'}")


@db.command()
def current() -> None:
    """Print the database's revision and the newest one available."""
    database = _database()
    try:
        click.echo(f"{display_url(database.url)}: revision {database.current_revision() or 'base'} "
                   f"(head {database.head_revision()})")  # fmt: skip
    finally:
        database.dispose()
