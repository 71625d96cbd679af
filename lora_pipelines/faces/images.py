"""Decoding untrusted photo bytes into RGB images, and small image helpers."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
MAX_BYTES = 50 * 1024 * 1024
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


class ImageDecodeError(ValueError):
    """A photo could not be used; `reason` is "corrupt_image" or "too_large"."""

    def __init__(self, message: str, *, reason: str = "corrupt_image") -> None:
        super().__init__(message)
        self.reason = reason


def decode_image(
    data: bytes,
    *,
    name: str = "image",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> Image.Image:
    """Decode JPEG/PNG/WebP bytes into an upright RGB image, refusing anything else."""
    if len(data) > max_bytes:
        raise ImageDecodeError(f"{name}: file too large ({len(data)} bytes > {max_bytes})", reason="too_large")
    if not data:
        raise ImageDecodeError(f"{name}: not an image (empty file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            # Image.open reads only the header: refuse huge dimensions before any pixel is decoded.
            width, height = img.size
            if img.format not in ACCEPTED_FORMATS:
                raise ImageDecodeError(f"{name}: not an image (unsupported format {img.format}; use JPEG, PNG or WebP)")
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"{name}: image too large ({width}x{height} = {width * height} pixels > {max_pixels})",
                    reason="too_large",
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{name}: image too large ({exc})", reason="too_large") from exc
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not an image (unrecognised data)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"{name}: not an image ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 120 else text[:117] + "..."


def downscale(img: Image.Image, max_side: int | None) -> Image.Image:
    """A copy no larger than max_side on its longest edge (the image itself when already small enough)."""
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def to_png_bytes(img: Image.Image) -> bytes:
    """PNG bytes without metadata, so equal pixels give equal bytes."""
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


class FaceBox:
    """Width, height and size of a detected face's `box` (left, top, right, bottom)."""

    box: tuple[int, int, int, int]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> int:
        """The smaller side of the box, in pixels."""
        return min(self.width, self.height)
