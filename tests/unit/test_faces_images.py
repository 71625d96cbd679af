"""Decoding untrusted photo bytes: real photos decode upright; anything else fails with a message naming the file."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from lora_pipelines.faces.images import ImageDecodeError, decode_image, downscale, to_png_bytes


def _png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_real_jpeg_png_and_webp_decode_to_rgb(faces_dir):
    jpeg = decode_image((faces_dir / "angelina_jolie/img4.jpg").read_bytes(), name="img4.jpg")
    png = decode_image((faces_dir / "alex_lacamoire/alex-lacamoire.png").read_bytes(), name="alex.png")
    webp = decode_image((faces_dir / "scarlett_johansson/img47.jpg").read_bytes(), name="img47.jpg")  # WebP inside
    assert (jpeg.mode, jpeg.size) == ("RGB", (2500, 1728))
    assert (png.mode, png.size) == ("RGB", (424, 394))
    assert (webp.mode, webp.size) == ("RGB", (1350, 1800))


def test_exif_orientation_is_applied(faces_dir):
    upright = decode_image((faces_dir / "angelina_jolie/img10.jpg").read_bytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif)
    decoded = decode_image(buf.getvalue(), name="rotated.jpg")
    assert decoded.size == upright.size


def test_truncated_jpeg_is_not_an_image(faces_dir):
    data = (faces_dir / "angelina_jolie/img2.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match=r"^photo\.jpg: not an image \(.*truncated") as err:
        decode_image(data[: len(data) // 2], name="photo.jpg")
    assert err.value.reason == "corrupt_image"


def test_random_bytes_are_not_an_image():
    noise = bytes((i * 7919 + 13) % 251 for i in range(4096))
    with pytest.raises(ImageDecodeError, match=r"^noise\.bin: not an image") as err:
        decode_image(noise, name="noise.bin")
    assert err.value.reason == "corrupt_image"


def test_text_file_is_not_an_image():
    with pytest.raises(ImageDecodeError, match=r"^notes\.jpg: not an image"):
        decode_image(b"these are my notes, not a photo\n", name="notes.jpg")


def test_empty_file_is_not_an_image():
    with pytest.raises(ImageDecodeError, match=r"^empty\.png: not an image \(empty file\)"):
        decode_image(b"", name="empty.png")


def test_decompression_bomb_is_refused_from_its_header():
    bomb = _png_header_claiming(100_000, 100_000)
    assert len(bomb) < 200  # the pixels would be 30 GB; only the header exists
    with pytest.raises(ImageDecodeError, match=r"^bomb\.png: image too large") as err:
        decode_image(bomb, name="bomb.png")
    assert err.value.reason == "too_large"


def test_pixel_limit_below_pillows_own_is_enforced_before_decoding():
    header = _png_header_claiming(8000, 6000)  # 48 MP claimed, pixel data absent
    with pytest.raises(ImageDecodeError, match=r"8000x6000 = 48000000 pixels > 40000000") as err:
        decode_image(header, name="big.png")
    assert err.value.reason == "too_large"


def test_byte_limit():
    with pytest.raises(ImageDecodeError, match=r"^huge\.jpg: file too large"):
        decode_image(b"\xff\xd8" + b"\0" * 2000, name="huge.jpg", max_bytes=1000)


def test_other_formats_are_refused():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    with pytest.raises(ImageDecodeError, match=r"unsupported format GIF"):
        decode_image(buf.getvalue(), name="anim.gif")


def test_downscale_and_png_bytes_are_deterministic():
    img = Image.new("RGB", (1000, 400), (10, 20, 30))
    small = downscale(img, 500)
    assert small.size == (500, 200)
    assert downscale(small, 800) is small
    assert to_png_bytes(small) == to_png_bytes(small.copy())
