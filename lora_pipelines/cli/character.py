"""`lora-pipelines character add | list | show | update | add-photos | remove`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def character() -> None:
    """Characters, their reference photos and where their LoRA training stands."""


def _one_line_errors(fn):
    """The use cases' refusals (unknown id, busy character, bad input) as one-line errors."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from lora_pipelines.services.character_management import CharacterBusyError, CharacterNotFoundError

        try:
            return fn(*args, **kwargs)
        except (CharacterNotFoundError, CharacterBusyError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    return run


def _states(ctx, character):
    from lora_pipelines.services.training_state import training_states

    return training_states(ctx, [character], with_progress=True)[character.id]


def _say_readiness(ctx, character, skipped: list[str]) -> None:
    """Whether the character can be trained now, and if not, what is missing (stderr, after the result line)."""
    states = [s for s in _states(ctx, character) if s.base_model in ctx.settings.train_base_model_list]
    usable, needed = len(character.photo_keys), ctx.settings.min_photos
    left_out = f" ({len(skipped)} skipped)" if skipped else ""
    if not character.lora_enabled:
        click.echo(f"LoRA disabled: {usable} usable photo(s){left_out}; generations use face swap with its photos",
                   err=True)
    elif any(s.state == "waiting_for_photos" for s in states):
        click.echo(f"cannot be trained yet: {usable} of {needed} usable photos (one clear face each){left_out}; add "
                   f"{needed - usable} more with `lora-pipelines character add-photos {character.id} --photos DIR`",
                   err=True)
    else:
        models = ", ".join(s.base_model for s in states)
        click.echo(f"can be trained: {usable} usable photos (minimum {needed}){left_out}; the new_characters sensor "
                   f"trains it for {models} (`dagster dev` or dagster-daemon); until a LoRA is ready its generations "
                   "take the fallback route", err=True)


@character.command("add")
@click.option("--name", required=True, help="Display name; the trigger word is derived from it unless given.")
@click.option("--photos", "photos_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of JPEG/PNG/WebP photos; only those with exactly one clear face are kept.")
@click.option("--lora-enabled/--no-lora", default=False, help="Train LoRAs for this character and use them.")
@click.option("--trigger-word", default=None, help="Trigger word (letters, digits, '_' and '-'); unique.")
@click.option("--allow-duplicate-name", is_flag=True, help="Add it even if a character has this name already.")
def add(name: str, photos_dir: Path, lora_enabled: bool, trigger_word: str | None, allow_duplicate_name: bool) -> None:
    """Add a character with its photos (copied into the object store)."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.domain.trigger_words import validate_trigger_word
    from lora_pipelines.services.characters import add_character, photos_in, usable_photos
    from lora_pipelines.store.characters import check_name

    try:  # what can be refused without the app database first: a refused character never creates a home
        check_name(name)
        if trigger_word is not None:
            validate_trigger_word(trigger_word)
        photos = photos_in(photos_dir)
        intake = usable_photos(photos)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    ctx = open_context(create=True)
    try:
        created, skipped = add_character(ctx, name, photos, lora_enabled=lora_enabled, trigger_word=trigger_word,
                                         allow_duplicate_name=allow_duplicate_name, intake=intake)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for message in skipped:
        click.echo(f"skipped: {message}", err=True)
    click.echo(f"character {created.id} {created.name!r}: {len(created.photo_keys)} photos, "
               f"trigger word {created.trigger_word!r}, LoRA {'enabled' if created.lora_enabled else 'disabled'}")
    _say_readiness(ctx, created, skipped)


@character.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--limit", default=500, type=click.IntRange(1, 10_000), help="At most this many characters.")
def list_(as_json: bool, limit: int) -> None:
    """Every character with its training state per base model."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.services.training_state import training_states
    from lora_pipelines.store.characters import CharactersRepository

    ctx = open_context()
    characters = CharactersRepository(ctx.db).list(limit=limit)
    states = training_states(ctx, characters, with_progress=True)
    if as_json:
        click.echo(json.dumps([_summary(c, states[c.id]) for c in characters], indent=2, default=str))
        return
    if not characters:
        click.echo("no characters yet: `lora-pipelines character add --name NAME --photos DIR`")
        return
    click.echo(f"{'id':>5}  {'name':<24} {'trigger word':<24} {'lora':<4} {'photos':>6}  training")
    for c in characters:
        training = " · ".join(f"{s.base_model}: {s.summary}" for s in states[c.id]) if c.lora_enabled else "-"
        click.echo(f"{c.id:>5}  {c.name[:24]:<24} {c.trigger_word[:24]:<24} {'on' if c.lora_enabled else 'off':<4} "
                   f"{len(c.photo_keys):>6}  {training}")


def _summary(c, states) -> dict:
    return {"id": c.id, "name": c.name, "trigger_word": c.trigger_word, "lora_enabled": c.lora_enabled,
            "photos": len(c.photo_keys), "training": [s.as_dict() for s in states]}


@character.command("show")
@click.argument("character_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_one_line_errors
def show(character_id: int, as_json: bool) -> None:
    """A character's photos, training state per base model (with reasons) and LoRAs."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.services.character_management import get_character
    from lora_pipelines.services.outputs import output_url
    from lora_pipelines.store.lora_models import LoraModelsRepository

    ctx = open_context()
    c = get_character(ctx, character_id)
    states = _states(ctx, c)
    loras = LoraModelsRepository(ctx.db).find_by_character_id(c.id)
    doc = {**_summary(c, states), "photo_keys": list(c.photo_keys),
           "photo_urls": [output_url(ctx.store, k) for k in c.photo_keys],
           "loras": [{"id": r.id, "base_model": r.base_model, "status": r.status, "model_path": r.model_path,
                      "error": r.error, "finished_at": r.finished_at} for r in loras],
           "created_at": c.created_at, "updated_at": c.updated_at}
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    click.echo(f"character {c.id} {c.name!r}: trigger word {c.trigger_word!r}, LoRA "
               f"{'enabled' if c.lora_enabled else 'disabled'}, {len(c.photo_keys)} photos")
    for state in states:
        extra = f" (check {state.check})" if state.check else ""
        used = f"; generations use LoRA {state.lora_in_use}" if state.lora_in_use and state.state != "ready" else ""
        click.echo(f"  {state.base_model:<14} {state.summary:<24} {state.reason}{extra}{used}")
    for r in loras:
        click.echo(f"  lora_models {r.id}: {r.base_model} {r.status} {r.model_path or ''} {r.error or ''}".rstrip())
    for url in doc["photo_urls"]:
        click.echo(f"  photo {url}")


@character.command("update")
@click.argument("character_id", type=int)
@click.option("--name", default=None, help="New display name (the trigger word stays: LoRAs were trained on it).")
@click.option("--lora-enabled/--no-lora-enabled", default=None,
              help="Train and use LoRAs for it, or stop new trainings and LoRA use.")
@click.option("--allow-duplicate-name", is_flag=True, help="Rename even if another character has the name.")
@_one_line_errors
def update(character_id: int, name: str | None, lora_enabled: bool | None, allow_duplicate_name: bool) -> None:
    """Rename a character or switch its LoRAs on or off."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.services.character_management import update_character

    if name is None and lora_enabled is None:
        raise click.UsageError("nothing to change: give --name and/or --lora-enabled/--no-lora-enabled")
    ctx = open_context()
    c = update_character(ctx, character_id, name=name, lora_enabled=lora_enabled,
                         allow_duplicate_name=allow_duplicate_name)
    click.echo(f"character {c.id} {c.name!r}: trigger word {c.trigger_word!r}, LoRA "
               f"{'enabled' if c.lora_enabled else 'disabled'}")
    if lora_enabled is False:
        click.echo("no new trainings are requested and its generations no longer use its LoRAs (a training already "
                   "on the GPU finishes, so enabling it again costs nothing more)", err=True)
    elif lora_enabled:
        _say_readiness(ctx, c, [])


@character.command("add-photos")
@click.argument("character_id", type=int)
@click.option("--photos", "photos_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of JPEG/PNG/WebP photos; only those with exactly one clear face are kept.")
@_one_line_errors
def add_photos(character_id: int, photos_dir: Path) -> None:
    """Add photos; a changed photo set is trained again (a new run key)."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.services.character_management import add_photos as add
    from lora_pipelines.services.characters import photos_in

    ctx = open_context()
    result = add(ctx, character_id, photos_in(photos_dir))
    for message in result.skipped:
        click.echo(f"skipped: {message}", err=True)
    c = result.character
    again = f", {result.already_stored} already stored" if result.already_stored else ""
    click.echo(f"character {c.id} {c.name!r}: {len(result.added)} new photos{again}, {len(c.photo_keys)} in all")
    if not result.added:
        click.echo("the photo set did not change: nothing is trained again", err=True)
    else:
        _say_readiness(ctx, c, result.skipped)


@character.command("remove")
@click.argument("character_id", type=int)
@click.option("--keep-files", is_flag=True, help="Keep its photos, datasets, LoRA files and images in the store.")
@_one_line_errors
def remove(character_id: int, keep_files: bool) -> None:
    """Delete a character, its LoRAs, generation jobs and partitions, and (unless kept) its stored files."""
    from lora_pipelines.cli.context import open_context
    from lora_pipelines.jobs.cli_runs import delete_character_partition
    from lora_pipelines.services.character_management import remove_character

    ctx = open_context()
    removal = remove_character(ctx, character_id, keep_files=keep_files)
    files = (f"kept its {removal.kept_objects} stored files" if keep_files
             else f"deleted its {removal.deleted_objects} stored files")
    click.echo(f"removed character {character_id} {removal.character.name!r}: {removal.rows.lora_models} LoRAs, "
               f"{len(removal.rows.generation_job_ids)} generation jobs; {files}")
    if delete_character_partition(ctx.settings, character_id):
        click.echo(f"deleted its Dagster partitions (character {character_id})", err=True)
    else:
        click.echo("the new_characters sensor deletes its Dagster partitions on its next tick", err=True)
