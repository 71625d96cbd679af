"""Scoring generated images against a character's reference faces, on real photos."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from conftest import person_photos
from lora_pipelines.faces.consistency import CharacterReference, score_image
from lora_pipelines.faces.embeddings import face_distance
from lora_pipelines.faces.images import decode_image


@pytest.fixture(scope="session")
def katy(faces_dir, analyzer):
    """Katy Perry: four photos make the reference, two are held out as 'generated' images."""
    photos = person_photos(faces_dir, "katy_perry")
    reference_photos, held_out = photos[:4], photos[4:]
    embeddings = [analyzer.analyze(decode_image(p.read_bytes()))[0].embedding for p in reference_photos]
    return CharacterReference.from_embeddings(embeddings), reference_photos, held_out


def test_threshold_follows_the_characters_own_spread(katy):
    reference, _, _ = katy
    pairwise = [face_distance(a, b) for a, b in itertools.combinations(reference.embeddings, 2)]
    expected = min(0.6, max(0.5, float(np.percentile(pairwise, 95)) + 0.05))
    assert reference.threshold == pytest.approx(expected, abs=1e-4)
    assert 0.5 <= reference.threshold <= 0.6


def test_one_reference_face_uses_the_global_threshold(katy):
    reference, _, _ = katy
    single = CharacterReference.from_embeddings(reference.embeddings[:1])
    assert single.threshold == 0.6 and single.spread_p95 is None
    with pytest.raises(ValueError, match="at least one face"):
        CharacterReference.from_embeddings([])


def test_other_photos_of_the_character_match(katy, analyzer):
    reference, _, held_out = katy
    for path in held_out:
        score = score_image(path.read_bytes(), reference, analyzer, name=path.name)
        assert score.match, (path.name, score)
        assert score.face_count == 1 and score.flags == []
        assert score.distance <= score.threshold == reference.threshold
        assert score.centroid_distance is not None


def test_someone_else_does_not_match(faces_dir, katy, analyzer):
    reference, _, _ = katy
    for person in ("scarlett_johansson", "rose_leslie"):
        path = person_photos(faces_dir, person)[0]
        score = score_image(path.read_bytes(), reference, analyzer)
        assert not score.match and score.distance > reference.threshold, (path, score)


def test_a_training_photo_coming_back_is_a_near_copy_not_a_match(katy, analyzer):
    reference, reference_photos, _ = katy
    copy = decode_image(reference_photos[0].read_bytes())
    score = score_image(copy, reference, analyzer)
    assert score.flags == ["near_copy"] and not score.match
    assert score.distance < reference.near_copy_distance


def test_a_perturbed_photo_is_not_a_near_copy(katy, analyzer):
    """Light and framing changes, as the simulated GPU service makes, move the face past the near-copy bar."""
    reference, reference_photos, _ = katy
    img = decode_image(reference_photos[1].read_bytes())
    w, h = img.size
    changed = ImageEnhance.Brightness(img.crop((w // 10, 0, w, h * 9 // 10)).rotate(8, expand=False)).enhance(1.3)
    changed = changed.resize((changed.width * 3 // 4, changed.height * 3 // 4))
    changed = changed.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    score = score_image(changed, reference, analyzer)
    assert score.match and "near_copy" not in score.flags, score


def test_several_faces_score_the_best_one_and_are_flagged(faces_dir, analyzer):
    kit = [p for p in person_photos(faces_dir, "kit_harington")]
    reference = CharacterReference.from_embeddings(
        [analyzer.analyze(decode_image(p.read_bytes()))[0].embedding for p in kit]
    )
    score = score_image((faces_dir / "_edge/kit_with_rose.jpg").read_bytes(), reference, analyzer)
    assert score.face_count == 2 and "several_faces" in score.flags
    assert score.match, score  # Kit is one of the two


def test_no_face_and_corrupt_images(katy, analyzer):
    reference, _, _ = katy
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))[..., None].repeat(3, axis=2))
    buf = io.BytesIO()
    gradient.save(buf, format="PNG")
    faceless = score_image(buf.getvalue(), reference, analyzer)
    assert faceless.flags == ["no_face"] and faceless.face_count == 0 and not faceless.match
    corrupt = score_image(b"GIF89a garbage", reference, analyzer, name="out.png")
    assert corrupt.flags == ["corrupt"] and not corrupt.match and corrupt.detail.startswith("out.png:")
