"""The hostile-input corpus: every bad input a user (or an attacker) can hand the pipeline, built at test time.

Each case is named by what it is and carries the words its error must contain, so a test can assert that the
error NAMES what was wrong. `write_*` builds the files into a folder; nothing binary is committed.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str  # the file name (or label) says what the case is
    data: bytes
    expect: str  # lower-case words the error message must contain
    reason: str | None = None  # the dataset's drop reason for an image case


# --- images ---------------------------------------------------------------------------------------------


def _jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def faceless_landscape() -> Image.Image:
    """Sky over a field: a photo-like image with no face in it."""
    height, width = 240, 320
    y = np.linspace(0.0, 1.0, height)[:, None]
    sky = np.stack([120 + 80 * y, 170 + 50 * y, 235 - 20 * y], axis=-1) * np.ones((1, width, 1))
    field = np.stack([60 + 40 * y, 130 + 30 * y, 50 + 10 * y], axis=-1) * np.ones((1, width, 1))
    pixels = np.where(y[..., None] < 0.55, sky, field)
    noise = np.random.default_rng(3).normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A 1-bit PNG of `width` x `height` zeros: a few KB on disk, width*height pixels once decoded.
    `rows` < height writes only that many rows (a header that promises more than the data holds)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height if rows is None else rows)]
    parts.append(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def image_cases() -> list[Case]:
    """Photos that must be refused (with their dataset drop reason), smallest first."""
    landscape = faceless_landscape()
    jpeg = _jpeg(landscape)
    png = io.BytesIO()
    landscape.save(png, format="PNG")
    png_bytes = png.getvalue()
    idat = png_bytes.index(b"IDAT") + 4
    scrambled = bytes(b ^ 0x5A for b in png_bytes[idat + 20:idat + 400])
    broken_png = png_bytes[:idat + 20] + scrambled + png_bytes[idat + 400:]
    gif = io.BytesIO()
    landscape.save(gif, format="GIF")
    return [
        Case("empty_file.jpg", b"", "empty file", "corrupt_image"),
        Case("text_file_renamed.jpg", b"these are my holiday notes, not a photo\n" * 4, "not an image",
             "corrupt_image"),
        Case("svg_renamed.png", b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="9"/></svg>', "not an image",
             "corrupt_image"),
        Case("random_bytes.webp", np.random.default_rng(1).bytes(4096), "not an image", "corrupt_image"),
        Case("truncated_jpeg.jpg", jpeg[: len(jpeg) * 2 // 5], "not an image", "corrupt_image"),
        Case("corrupt_png_data.png", broken_png, "not an image", "corrupt_image"),
        Case("gif_renamed.png", gif.getvalue(), "unsupported format gif", "corrupt_image"),
        # 100 000 x 100 000 declared in the header, one row of data: refused before anything is decoded
        Case("huge_dimensions_header.png", bilevel_png(100_000, 100_000, rows=1), "image too large", "too_large"),
        # a complete, valid PNG of 8000 x 6000 = 48 M pixels in ~6 KB: over our 40 M limit, under Pillow's own
        Case("decompression_bomb_48mpx.png", bilevel_png(8000, 6000), "image too large", "too_large"),
        Case("faceless_landscape.jpg", jpeg, "no face", "no_face"),
        Case("one_pixel.png", _one_pixel_png(), "no face", "no_face"),
    ]


def _one_pixel_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 150, 120)).save(out, format="PNG")
    return out.getvalue()


def oversized_file_case(limit: int = 50 * MIB) -> Case:
    """A 'JPEG' one byte over the byte limit (refused before it is parsed)."""
    return Case("oversized_file.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * (limit - 3), "file too large", "too_large")


def write_images(folder: Path, cases: list[Case]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        (folder / case.name).write_bytes(case.data)
        paths[case.name] = folder / case.name
    return paths


# --- safetensors ------------------------------------------------------------------------------------------


def safetensors_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def _f32(offsets: list[int], shape: list[int]) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


def _valid_lora() -> bytes:
    from safetensors.numpy import save

    from lora_pipelines.domain import lora_format

    rng = np.random.default_rng(5)
    tensors = {name: rng.standard_normal(shape).astype(np.float16)
               for name, shape in lora_format.lora_tensor_shapes("flux", 4).items()}
    return save(tensors, metadata=lora_format.trainer_metadata("flux", "ohwx_case", rank=4, steps=10, trainer="test"))


def _torch_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"lora_down.weight": [0.0] * 8}, protocol=2))
        archive.writestr("archive/version", "3\n")
    return out.getvalue()


def safetensors_cases() -> list[Case]:
    valid = _valid_lora()
    return [
        Case("oversized_header_length.safetensors", safetensors_bytes(b"{}", length=2**40), "exceeds the 100 mb limit"),
        Case("header_length_past_end.safetensors", safetensors_bytes(b'{"a":1}', length=4096), "runs past the end"),
        Case("non_json_header.safetensors", safetensors_bytes(b"{this is not json"), "header is not json"),
        Case("non_utf8_header.safetensors", safetensors_bytes(b'{"\xff\xfe": 1}'), "header is not utf-8"),
        Case("header_is_a_list.safetensors", safetensors_bytes(b"[1, 2, 3]"), "not an object"),
        Case("offsets_past_end.safetensors",
             safetensors_bytes({"w": _f32([0, 64], [16])}, b"\x00" * 16), "past the end of the data section"),
        Case("overlapping_tensors.safetensors",
             safetensors_bytes({"a": _f32([0, 16], [4]), "b": _f32([8, 24], [4])}, b"\x00" * 24), "overlaps"),
        Case("negative_offsets.safetensors",
             safetensors_bytes({"w": _f32([-16, 0], [4])}, b"\x00" * 16), "invalid data_offsets"),
        Case("metadata_not_strings.safetensors",
             safetensors_bytes({"__metadata__": {"steps": 1000}, "w": _f32([0, 16], [4])}, b"\x00" * 16),
             "not a string"),
        Case("no_tensors.safetensors", safetensors_bytes({"__metadata__": {}}), "no tensors"),
        Case("pickle_renamed.safetensors", pickle.dumps({"lora_down.weight": [0.0] * 8}, protocol=4), "pickle"),
        Case("torch_zip_renamed.safetensors", _torch_zip(), "pickle"),
        Case("empty.safetensors", b"", "shorter than the 8-byte header length"),
        Case("truncated_download.safetensors", valid[: len(valid) - 100], "past the end of the data section"),
    ]


def write_safetensors(folder: Path) -> dict[str, tuple[Path, Case]]:
    folder.mkdir(parents=True, exist_ok=True)
    return {case.name: (_write(folder / case.name, case.data), case) for case in safetensors_cases()}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- ids, names, prompts ----------------------------------------------------------------------------------

NON_UTF8 = b"caf\xe9 \xff\xfe".decode("utf-8", "surrogateescape")  # what Python makes of Latin-1 bytes in argv

# label -> (value, words the validate_id error must contain)
HOSTILE_IDS: dict[str, tuple[str, str]] = {
    "dot_dot_slash": ("../../etc/passwd", "may only use"),
    "dot_dot": ("..", "may only use"),
    "embedded_dot_dot": ("a..b", "may only use"),
    "slash": ("a/b", "may only use"),
    "backslash": ("a\\b", "may only use"),
    "absolute_path": ("/etc/passwd", "may only use"),
    "leading_dot": (".hidden", "may only use"),
    "nul_byte": ("abc\x00def", "nul byte"),
    "newline": ("abc\ndef", "may only use"),
    "very_long": ("a" * 10_000, "at most 128"),
    "non_utf8": (NON_UTF8, "may only use"),
    "fullwidth_dots": ("\uff0e\uff0e\uff0fx", "may only use"),
    "empty": ("", "empty"),
}

# character names: (value, None when it must be stored verbatim, else words the refusal must contain)
HOSTILE_NAMES: dict[str, tuple[str, str | None]] = {
    "path_traversal": ("../../etc/passwd", None),
    "sql_injection": ("Robert'); DROP TABLE characters;--", None),
    "template_injection": ("{{7*7}} ${triggerWord} {prompt}", None),
    "unicode": ("李小龙 🐉 Zoë", None),
    "nul_byte": ("Kit\x00Harington", "nul byte"),
    "very_long": ("K" * 5000, "at most 200"),
    "non_utf8": (NON_UTF8, "not valid utf-8"),
}

SQL_INJECTION_PROMPT = "portrait'); DROP TABLE generation_jobs;--"
TEMPLATE_INJECTION_PROMPTS = (
    "a portrait of ${triggerWord} in ${userPrompt}",
    "{{7*7}} {{ config.items() }} in a park",
    "{prompt} {0} {trigger_word!r} %s %(x)s",
)
HOSTILE_PROMPTS = (SQL_INJECTION_PROMPT, *TEMPLATE_INJECTION_PROMPTS)
