"""Small contact sheets of images, so the Dagster UI can show what a dataset or a batch looks like."""

from __future__ import annotations

import io
import zipfile

from PIL import Image, ImageDraw

from lora_pipelines.domain.keys import generation_output_key
from lora_pipelines.services.context import PipelineContext

TILE = 96
COLUMNS = 6
MAX_TILES = 12


def contact_sheet(images: list[tuple[str, bytes]], *, tile: int = TILE, columns: int = COLUMNS) -> bytes | None:
    """A JPEG grid of labelled thumbnails (None when there is nothing to show; unreadable images are skipped)."""
    thumbs = []
    for label, data in images[:MAX_TILES]:
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (OSError, ValueError):
            continue
        image.thumbnail((tile, tile))
        thumbs.append((label, image))
    if not thumbs:
        return None
    rows = (len(thumbs) + columns - 1) // columns
    sheet = Image.new("RGB", (min(len(thumbs), columns) * tile, rows * (tile + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(thumbs):
        x, y = (index % columns) * tile, (index // columns) * (tile + 14)
        sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
        draw.text((x + 2, y + tile), label[:16], fill="black")
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=70)
    return out.getvalue()


def dataset_preview(ctx: PipelineContext, zip_key: str) -> bytes | None:
    """The training crops of a stored dataset zip."""
    with zipfile.ZipFile(io.BytesIO(ctx.store.get_bytes(zip_key))) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("images/") and n.endswith(".png"))
        return contact_sheet([(n.rsplit("/", 1)[-1], archive.read(n)) for n in names[:MAX_TILES]])


def outputs_preview(ctx: PipelineContext, outcomes) -> bytes | None:
    """The first image of each succeeded job, labelled with its id and route."""
    images = []
    for outcome in outcomes:
        if outcome.status != "succeeded" or len(images) >= MAX_TILES:
            continue
        key = generation_output_key(str(outcome.job_id), 0)
        if ctx.store.exists(key):
            images.append((f"#{outcome.job_id} {outcome.mode}", ctx.store.get_bytes(key)))
    return contact_sheet(images)


# Dagster's UI shows a Markdown metadata value in place (not behind "[Show Markdown]") on the asset's pages when it
# is shorter than this (ui-core MetadataEntry.tsx: expandSmallValues && mdStr.length < 1000); its sanitizer allows
# data: image sources.
INLINE_MARKDOWN_LIMIT = 1000
_INLINE_STEPS = ((96, 50), (80, 45), (64, 40), (56, 35), (48, 30), (40, 25))


def inline_thumbnail(data: bytes, alt: str, *, limit: int = INLINE_MARKDOWN_LIMIT) -> str | None:
    """Markdown of a WebP data-URI thumbnail short enough to show inline: the largest that fits under `limit`
    characters (None when the image is unreadable or nothing fits)."""
    import base64

    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except (OSError, ValueError):
        return None
    for side, quality in _INLINE_STEPS:
        thumb = image.copy()
        thumb.thumbnail((side, side))
        out = io.BytesIO()
        thumb.save(out, format="WEBP", quality=quality, method=6)
        markdown = f"![{alt}](data:image/webp;base64,{base64.b64encode(out.getvalue()).decode()})"
        if len(markdown) < limit:
            return markdown
    return None


def output_images(ctx: PipelineContext, outcomes, limit: int = 8) -> list[tuple[int, str, bytes]]:
    """(job id, route, first image) of up to `limit` succeeded jobs."""
    images = []
    for outcome in outcomes:
        if outcome.status != "succeeded" or len(images) >= limit:
            continue
        key = generation_output_key(str(outcome.job_id), 0)
        if ctx.store.exists(key):
            images.append((outcome.job_id, outcome.mode or "", ctx.store.get_bytes(key)))
    return images


def dataset_crops(ctx: PipelineContext, zip_key: str, limit: int = 6) -> list[tuple[str, bytes]]:
    """(item name, PNG) of the first training crops of a stored dataset zip."""
    with zipfile.ZipFile(io.BytesIO(ctx.store.get_bytes(zip_key))) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("images/") and n.endswith(".png"))
        return [(n.rsplit("/", 1)[-1].removesuffix(".png"), archive.read(n)) for n in names[:limit]]
