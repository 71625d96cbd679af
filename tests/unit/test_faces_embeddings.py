"""Face detection and embeddings on the shared real photos: identities separate, edge cases are counted right."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from lora_pipelines.faces.batch import analyze_many
from lora_pipelines.faces.consistency import CharacterReference, score_faces
from lora_pipelines.faces.embeddings import aligned_crop, face_distance
from lora_pipelines.faces.evaluation import pair_distances, separation_auc
from lora_pipelines.faces.images import decode_image


@pytest.fixture(scope="session")
def manifest(faces_dir) -> list[tuple[str, str]]:
    """(relative file, identity) for every photo, _edge included."""
    with open(faces_dir / "MANIFEST.csv", newline="") as fh:
        return [(row["file"], row["identity"]) for row in csv.DictReader(fh)]


@pytest.fixture(scope="session")
def analyzed(faces_dir, manifest):
    """Every shared photo through the batched pipeline (two worker processes), plus two bad inputs at the end."""
    sources = [faces_dir / rel for rel, _ in manifest] + [b"not a photo", faces_dir / "missing.jpg"]
    return analyze_many(sources, workers=2)


def _single_faces(manifest, analyzed):
    return [
        (identity, result.faces[0])
        for (_, identity), result in zip(manifest, analyzed[: len(manifest)], strict=True)
        if not identity.startswith("_")
    ]


def test_batch_keeps_order_and_reports_bad_inputs_without_stopping(manifest, analyzed):
    assert [r.index for r in analyzed] == list(range(len(manifest) + 2))
    assert all(r.ok for r in analyzed[: len(manifest)])
    not_a_photo, missing = analyzed[-2:]
    assert not_a_photo.error_reason == "corrupt_image" and "not an image" in not_a_photo.error
    assert missing.error_reason == "unreadable" and "missing.jpg" in missing.error


def test_every_single_person_photo_has_exactly_one_face(manifest, analyzed):
    counts = {rel: len(r.faces) for (rel, identity), r in zip(manifest, analyzed[: len(manifest)], strict=True)
              if not identity.startswith("_")}
    assert set(counts.values()) == {1}, {rel: n for rel, n in counts.items() if n != 1}


def test_two_faces_in_the_edge_photo(manifest, analyzed):
    photos = zip(manifest, analyzed[: len(manifest)], strict=True)
    result = next(r for (rel, _), r in photos if rel == "_edge/kit_with_rose.jpg")
    assert len(result.faces) == 2
    left, right = sorted(result.faces, key=lambda f: f.box[0])
    assert left.box[2] <= right.box[0]  # two separate faces, not one counted twice


def test_same_and_different_people_separate(manifest, analyzed):
    faces = _single_faces(manifest, analyzed)
    same, different = pair_distances([f.embedding for _, f in faces], [i for i, _ in faces])
    auc = separation_auc(same, different)
    assert auc >= 0.99, auc
    assert np.median(same) < 0.5 < 0.65 < np.median(different)


def test_leave_one_out_consistency_matches_own_photos_and_rejects_others(manifest, analyzed):
    faces = _single_faces(manifest, analyzed)
    own_hits, own_total, impostor_hits, impostor_total = 0, 0, 0, 0
    for i, (identity, face) in enumerate(faces):
        reference = CharacterReference.from_embeddings(
            [f.embedding for j, (other, f) in enumerate(faces) if other == identity and j != i]
        )
        own_hits += score_faces([face], reference).match
        own_total += 1
        for other, other_face in faces:
            if other != identity:
                impostor_hits += score_faces([other_face], reference).match
                impostor_total += 1
    assert own_hits / own_total >= 0.95, (own_hits, own_total)
    assert impostor_hits / impostor_total <= 0.005, (impostor_hits, impostor_total)


def test_boxes_are_in_original_coordinates(faces_dir, analyzer):
    img = decode_image((faces_dir / "angelina_jolie/img4.jpg").read_bytes())
    downscaled = analyzer.analyze(img, detect_max_side=800)[0]
    left, top, right, bottom = downscaled.box
    assert right - left > 500  # a 2500 px photo: detected at 800 px, scaled back
    assert 0 <= left < right <= img.width and 0 <= top < bottom <= img.height
    assert (downscaled.landmarks[:, 0] >= left - 50).all() and (downscaled.landmarks[:, 0] <= right + 50).all()
    assert downscaled.embedding.shape == (128,) and downscaled.embedding.dtype == np.float32


def test_faceless_images_have_no_face(faces_dir, analyzer):
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))[..., None].repeat(3, axis=2))
    photo = decode_image((faces_dir / "barack_obama/obama.jpg").read_bytes())
    background = photo.crop((0, 0, photo.width // 4, photo.height // 2))  # curtain left of the face
    assert analyzer.analyze(gradient) == []
    assert analyzer.analyze(background) == []
    assert len(analyzer.analyze(photo)) == 1


def test_exif_rotated_photo_still_shows_its_face(faces_dir, analyzer):
    upright = decode_image((faces_dir / "jeff_bezos/img21.jpg").read_bytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    sideways.save(buf, format="JPEG", quality=95, exif=exif)

    assert analyzer.analyze(sideways) == []  # HOG finds no face lying on its side...
    faces = analyzer.analyze(decode_image(buf.getvalue(), name="rotated.jpg"))  # ...the decoder stands it up
    assert len(faces) == 1
    assert face_distance(faces[0].embedding, analyzer.analyze(upright)[0].embedding) < 0.15


def test_aligned_crop_is_square_and_keeps_the_identity(faces_dir, analyzer):
    img = decode_image((faces_dir / "katy_perry/img42.jpg").read_bytes())
    face = analyzer.analyze(img)[0]
    crop = aligned_crop(img, face, size=256)
    assert crop.size == (256, 256) and crop.mode == "RGB"
    again = analyzer.analyze(crop)
    assert len(again) == 1
    assert face_distance(again[0].embedding, face.embedding) < 0.2
    # padding keeps the whole head: the face box covers well under half the crop
    assert again[0].width < 0.6 * crop.width
