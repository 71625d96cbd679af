"""Contact sheets for the UI: labelled thumbnails, unreadable images skipped, nothing when there is nothing."""

from __future__ import annotations

import io

from PIL import Image

from lora_pipelines.services.previews import MAX_TILES, TILE, contact_sheet


def _png(color: str, size=(300, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def test_contact_sheet_tiles_readable_images_and_skips_the_rest():
    sheet = Image.open(io.BytesIO(contact_sheet([("a", _png("red")), ("bad", b"not an image"), ("b", _png("blue"))])))
    assert sheet.format == "JPEG" and sheet.size == (2 * TILE, TILE + 14)
    left, right = sheet.getpixel((TILE // 2, TILE // 2)), sheet.getpixel((TILE + TILE // 2, TILE // 2))
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60


def test_contact_sheet_caps_the_tiles_and_returns_none_for_nothing():
    many = Image.open(io.BytesIO(contact_sheet([(str(i), _png("green", (50, 50))) for i in range(30)])))
    assert many.size == (6 * TILE, (MAX_TILES // 6) * (TILE + 14))
    assert contact_sheet([]) is None and contact_sheet([("x", b"garbage")]) is None
