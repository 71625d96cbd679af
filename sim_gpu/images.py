"""Image synthesis of the simulated GPU service: a seeded scene with (or without) a face pasted in.

A face appears only when the caller hands one in; which face is the honesty decision, made by the caller.
Each output varies pose, scale, position, lighting and background so it is never a copy of a training crop, except
an over-trained LoRA's "copy", which is one.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo

Degradation = Literal["lora", "swap", "copy"]


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    top, bottom = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    gradient = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
    coarse = rng.normal(0, 18, (8, 8, 3)).astype(np.float32)
    noise = np.asarray(Image.fromarray(np.uint8(np.clip(coarse + 128, 0, 255))).resize((width, height), Image.BICUBIC),
                       dtype=np.float32) - 128
    pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).copy())
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):  # some scenery: soft blobs and bars
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        color = tuple(int(c) for c in rng.integers(20, 235, 3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + w, y + h), fill=color)
        else:
            draw.rectangle((x, y, x + w, y + h / 4), fill=color)
    return image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 80))


def _feather_mask(size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    inset = size * 0.07
    ImageDraw.Draw(mask).ellipse((inset, inset * 0.6, size - inset, size - inset * 0.3), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(radius=size / 16))


def _vary_face(rng: np.random.Generator, crop: np.ndarray, side: int, degradation: Degradation) -> Image.Image:
    strong = degradation == "swap"
    face = Image.fromarray(crop)
    if rng.random() < 0.5:
        face = face.transpose(Image.FLIP_LEFT_RIGHT)
    stretch = rng.uniform(0.86, 1.14)  # a slightly different face shape / head turn
    face = face.resize((max(8, int(side * stretch)), side), Image.BICUBIC).resize((side, side), Image.BICUBIC) \
        if stretch < 1 else face.resize((side, int(side / stretch)), Image.BICUBIC).resize((side, side), Image.BICUBIC)
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.88, 1.12, 3)  # lighting and colour cast
    if strong:
        gain *= rng.uniform(0.85, 1.15, 3)
    gamma = rng.uniform(0.75, 1.3)
    pixels = 255.0 * (np.asarray(face, dtype=np.float32) / 255.0) ** gamma * gain[None, None, :]
    ramp = np.linspace(-1, 1, side)[None, :, None] * rng.uniform(-40, 40)  # light from one side
    pixels = np.clip(pixels + ramp, 0, 255).astype(np.uint8)
    radius = rng.uniform(1.4, 2.4) if strong else rng.uniform(0.8, 1.6)
    face = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=radius))
    if strong:  # coarse resampling, as a face-swap model's low-res output would show
        low = max(48, side // 3)
        face = face.resize((low, low), Image.BILINEAR).resize((side, side), Image.BILINEAR)
    return face


def synthesize(*, seed: int, width: int, height: int, face: np.ndarray | None, degradation: Degradation = "lora",
               info: dict[str, str] | None = None) -> bytes:
    """A PNG of a seeded scene, with `face` (HxWx3 uint8 crop) pasted in when given; deterministic per seed.
    "copy" (an over-trained LoRA): `face` is a whole training photo, fitted into the frame, as it was."""
    rng = np.random.default_rng(seed)
    canvas = _background(rng, width, height)
    if face is not None and degradation == "copy":  # the whole photo, fitted into the frame
        photo = Image.fromarray(face)
        scale = min(width / photo.width, height / photo.height)
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BICUBIC)
        canvas.paste(photo, ((width - photo.width) // 2, (height - photo.height) // 2))
    elif face is not None:
        side = int(min(width, height) * rng.uniform(0.42, 0.6))
        angle = float(rng.uniform(-12, 12))
        varied = _vary_face(rng, face, side, degradation)
        rotated = varied.rotate(angle, resample=Image.BICUBIC, expand=True)
        mask = _feather_mask(side).rotate(angle, resample=Image.BICUBIC, expand=True)
        x = int(rng.uniform(0, max(1, width - rotated.width)))
        y = int(rng.uniform(0, max(1, height - rotated.height)))
        canvas.paste(rotated, (x, y), mask)
    pixels = np.asarray(canvas, dtype=np.float32)
    sigma = 7.0 if degradation == "swap" and face is not None else 3.0
    pixels = np.clip(pixels + rng.normal(0, sigma, pixels.shape), 0, 255).astype(np.uint8)
    meta = PngInfo()
    for key, value in {"backend": "simulated", **(info or {})}.items():
        meta.add_text(key, value)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", pnginfo=meta, compress_level=1)
    return out.getvalue()
