"""Metadata helpers shared by the assets: string tables and inline image previews."""

import base64

import dagster as dg


def string_table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    records = [dg.TableRecord({c: "" if r.get(c) is None else str(r.get(c)) for c in columns}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def image_md(jpeg: bytes | None, alt: str) -> dg.MarkdownMetadataValue:
    """There is no image metadata type: an inline data-URI thumbnail in Markdown shows in the UI."""
    if jpeg is None:
        return dg.MetadataValue.md(f"_no {alt}_")
    return dg.MetadataValue.md(f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode()})")


def inline_images(images: list[tuple[str, bytes]]) -> dict[str, dg.MarkdownMetadataValue]:
    """One metadata entry per image (label → thumbnail), each small enough for the UI to show in place."""
    from lora_pipelines.services.previews import inline_thumbnail

    entries = {}
    for label, data in images:
        markdown = inline_thumbnail(data, label)
        if markdown is not None:
            entries[label] = dg.MetadataValue.md(markdown)
    return entries


def character_label(ctx, character_id: int) -> dict[str, str]:
    """`character: "12 Katy Perry"`: partition keys are ids, the UI shows this beside them."""
    from lora_pipelines.store.characters import CharactersRepository

    character = CharactersRepository(ctx.db).get(character_id)
    return {"character": f"{character_id} {character.name}" if character else f"{character_id} (removed)"}
