"""heldout_likeness: FaceSim on held-out photos, near copies of training photos and faceless images count 0."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lora_pipelines.faces.likeness import heldout_likeness
from lora_pipelines.faces.recognisers import SFaceRecogniser, reference_embeddings


def _photos(faces_dir, person):
    return [(p.name, p.read_bytes()) for p in sorted((faces_dir / person).iterdir())]


@pytest.fixture(scope="module")
def sface():
    return SFaceRecogniser()


def test_the_person_scores_higher_than_someone_else_and_copies_score_nothing(faces_dir, sface):
    jennifer = _photos(faces_dir, "jennifer_aniston")
    training, held = jennifer[:4], jennifer[4:]
    held_refs = reference_embeddings(sface, held)[0]
    training_refs = reference_embeddings(sface, training)[0]
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(blank, format="PNG")

    # "generated" images: other photos of her (stand-ins for good generations), someone else, and no face
    own = heldout_likeness([d for _, d in training[:2]], held_refs, [], recogniser=sface)
    other = heldout_likeness([d for _, d in _photos(faces_dir, "katy_perry")[:2]], held_refs, training_refs)
    faceless = heldout_likeness([blank.getvalue(), b"junk"], held_refs, training_refs)
    copies = heldout_likeness([d for _, d in training[:2]], held_refs, training_refs)

    assert own.mean > other.mean + 0.2 and own.matches == 2 and other.matches == 0
    assert (faceless.mean, faceless.faces_found, faceless.per_image) == (0.0, 0, [None, None])
    assert (copies.near_copies, copies.mean, copies.matches) == (2, 0.0, 0)  # the training photos themselves
    with pytest.raises(ValueError, match="at least one held-out"):
        heldout_likeness([], [], [])
