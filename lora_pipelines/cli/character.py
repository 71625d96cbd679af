"""`lora-pipelines character add --name NAME --photos DIR [--lora-enabled]`."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def character() -> None:
    """Characters and their reference photos."""


@character.command("add")
@click.option("--name", required=True, help="Display name; the trigger word is derived from it unless given.")
@click.option("--photos", "photos_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of JPEG/PNG/WebP photos.")
@click.option("--lora-enabled/--no-lora", default=False, help="Train LoRAs for this character and use them.")
@click.option("--trigger-word", default=None, help="Trigger word (letters, digits, '_' and '-').")
def add(name: str, photos_dir: Path, lora_enabled: bool, trigger_word: str | None) -> None:
    """Add a character with its photos (copied into the object store)."""
    from lora_pipelines.services.characters import PhotoFolderError, add_character, photos_in
    from lora_pipelines.cli.context import open_context

    ctx = open_context(create=True)
    try:
        created, skipped = add_character(ctx, name, photos_in(photos_dir), lora_enabled=lora_enabled,
                                         trigger_word=trigger_word)
    except (PhotoFolderError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for message in skipped:
        click.echo(f"skipped: {message}", err=True)
    click.echo(f"character {created.id} {created.name!r}: {len(created.photo_keys)} photos, "
               f"trigger word {created.trigger_word!r}, LoRA {'enabled' if created.lora_enabled else 'disabled'}")
    if created.lora_enabled:
        click.echo("its LoRAs are trained when the new_characters sensor runs (`dagster dev` or dagster-daemon); "
                   "until one is ready, its generations take the fallback route", err=True)
