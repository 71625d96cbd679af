"""Training datasets from real photos: what is kept, what is dropped and why, and that the result is reproducible."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import person_photos
from lora_pipelines.faces.dataset import build_training_dataset
from lora_pipelines.faces.embeddings import DetectedFace, default_analyzer
from lora_pipelines.faces.images import decode_image


class CachingAnalyzer:
    """The real analyzer, memoised on pixels: the tests build many datasets from the same photos."""

    def __init__(self) -> None:
        self.inner = default_analyzer()
        self.cache: dict[tuple, list[DetectedFace]] = {}

    def analyze(self, img: Image.Image) -> list[DetectedFace]:
        key = (img.size, hashlib.sha256(img.tobytes()).hexdigest())
        if key not in self.cache:
            self.cache[key] = self.inner.analyze(img)
        return self.cache[key]


@pytest.fixture(scope="session")
def analyzer() -> CachingAnalyzer:
    return CachingAnalyzer()


def _photos(faces_dir, person: str) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in person_photos(faces_dir, person)]


def _jpeg(img: Image.Image, **save_args) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **save_args)
    return buf.getvalue()


@pytest.fixture(scope="session")
def angelina(faces_dir) -> list[tuple[str, bytes]]:
    photos = _photos(faces_dir, "angelina_jolie")
    assert len(photos) == 6
    return photos


@pytest.fixture(scope="session")
def angelina_dataset(angelina, analyzer):
    return build_training_dataset(angelina, trigger_word="ajlora", analyzer=analyzer, training_size=384)


def test_six_photos_of_one_person_become_six_captioned_crops(angelina_dataset, angelina):
    ds = angelina_dataset
    assert [item.name for item in ds.items] == sorted(name for name, _ in angelina)
    assert ds.dropped == []
    assert ds.identity.passed and len(ds.identity.distances) == 6
    for item in ds.items:
        assert item.caption.startswith("a photo of ajlora, ")
        crop = Image.open(io.BytesIO(item.image_png))
        assert (crop.format, crop.size) == ("PNG", (384, 384))
        assert item.source_sha256 == hashlib.sha256(dict(angelina)[item.name]).hexdigest()


def test_dataset_hash_does_not_depend_on_input_order(angelina_dataset, angelina, analyzer):
    shuffled = list(angelina)
    random.Random(7).shuffle(shuffled)
    assert [n for n, _ in shuffled] != [n for n, _ in angelina]
    again = build_training_dataset(shuffled, trigger_word="ajlora", analyzer=analyzer, training_size=384)
    assert again.dataset_hash == angelina_dataset.dataset_hash
    assert hashlib.sha256(again.to_zip_bytes()).digest() == hashlib.sha256(angelina_dataset.to_zip_bytes()).digest()

    other_word = build_training_dataset(angelina, trigger_word="otherword", analyzer=analyzer, training_size=384)
    assert other_word.dataset_hash != angelina_dataset.dataset_hash


def test_zip_holds_images_captions_and_manifest(angelina_dataset):
    ds = angelina_dataset
    archive = zipfile.ZipFile(io.BytesIO(ds.to_zip_bytes()))
    names = archive.namelist()
    assert names == sorted(names)
    assert "manifest.json" in names
    assert [n for n in names if n.endswith(".png")] == [f"images/{i:03d}.png" for i in range(1, 7)]
    assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest == ds.manifest
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest() == ds.dataset_hash
    for entry in manifest["items"]:
        assert hashlib.sha256(archive.read(entry["image"])).hexdigest() == entry["image_sha256"]
        caption = archive.read(entry["caption"]).decode()
        assert hashlib.sha256(caption.encode()).hexdigest() == entry["caption_sha256"]
        assert "ajlora" in caption


def test_corrupt_faceless_crowded_and_tiny_photos_are_dropped_with_reasons(faces_dir, angelina, analyzer):
    good = angelina[:3]
    truncated = angelina[3][1][: len(angelina[3][1]) // 3]
    obama = decode_image((faces_dir / "barack_obama/obama.jpg").read_bytes())
    background = _jpeg(obama.crop((0, 0, obama.width // 4, obama.height // 2)), quality=90)
    tiny = _jpeg(decode_image(angelina[0][1]).resize((120, 175)), quality=90)
    photos = good + [
        ("broken.jpg", truncated),
        ("curtain.jpg", background),
        ("two_people.jpg", (faces_dir / "_edge/kit_with_rose.jpg").read_bytes()),
        ("tiny.jpg", tiny),
    ]
    ds = build_training_dataset(photos, trigger_word="ajlora", analyzer=analyzer, training_size=256)
    reasons = {d.name: d.reason for d in ds.dropped}
    assert reasons == {
        "broken.jpg": "corrupt_image",
        "curtain.jpg": "no_face",
        "two_people.jpg": "multiple_faces",
        "tiny.jpg": "face_too_small",
    }
    assert [item.name for item in ds.items] == sorted(name for name, _ in good)
    assert all(d.detail.startswith(d.name + ":") for d in ds.dropped)
    assert ds.manifest["dropped"][0]["reason"] == "corrupt_image"


def test_too_large_photo_is_dropped(angelina, analyzer):
    ds = build_training_dataset(angelina[:2], trigger_word="ajlora", analyzer=analyzer, max_pixels=400_000)
    big = [name for name, data in angelina[:2] if np.prod(Image.open(io.BytesIO(data)).size) > 400_000]
    assert big and sorted(d.name for d in ds.dropped if d.reason == "too_large") == sorted(big)


def test_exact_and_reencoded_duplicates_are_dropped(angelina, analyzer):
    name, data = angelina[1]
    reencoded = _jpeg(decode_image(data).resize((500, 667)), quality=80)
    photos = list(angelina) + [("copy_of_" + name, data), ("resaved.jpg", reencoded)]
    ds = build_training_dataset(photos, trigger_word="ajlora", analyzer=analyzer, training_size=256)
    dropped = {d.name: d.reason for d in ds.dropped}
    copies = {name, "copy_of_" + name, "resaved.jpg"}
    survivors = copies & {item.name for item in ds.items}
    assert len(ds.items) == 6 and len(survivors) == 1
    (survivor,) = survivors
    assert dropped == {other: f"near_duplicate_of:{survivor}" for other in copies - survivors}


def test_mixing_two_people_fails_identity_and_names_the_outliers(faces_dir, angelina, analyzer):
    obama = _photos(faces_dir, "barack_obama")[:2]
    ds = build_training_dataset(angelina[:4] + obama, trigger_word="ajlora", analyzer=analyzer, training_size=256)
    assert not ds.identity.passed
    assert sorted(name for name, _ in ds.identity.outliers) == sorted(name for name, _ in obama)
    assert all(distance > 0.6 for _, distance in ds.identity.outliers)
    assert ds.identity.medoid in {name for name, _ in angelina}
    assert ds.manifest["identity"]["passed"] is False


def test_exif_rotated_photo_is_kept_upright(faces_dir, analyzer):
    upright = decode_image((faces_dir / "jeff_bezos/img21.jpg").read_bytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _jpeg(upright.transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif)
    photos = [("rotated.jpg", rotated), ("img20.jpg", (faces_dir / "jeff_bezos/img20.jpg").read_bytes())]
    ds = build_training_dataset(photos, trigger_word="jbz", analyzer=analyzer, training_size=256)
    assert [item.name for item in ds.items] == ["img20.jpg", "rotated.jpg"]
    assert ds.identity.passed


def test_bad_arguments_are_refused(angelina, analyzer):
    with pytest.raises(ValueError, match="invalid trigger word"):
        build_training_dataset(angelina[:1], trigger_word="bad, word", analyzer=analyzer)
    with pytest.raises(ValueError, match="names must be unique"):
        build_training_dataset([angelina[0], angelina[0]], trigger_word="ok", analyzer=analyzer)
