"""`lora-pipelines face-match` on folders of real photos, through click's CliRunner."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import person_photos
from lora_pipelines.cli import main


@pytest.fixture(scope="module")
def folders(faces_dir, tmp_path_factory):
    """Reference: three photos of Angelina Jolie + a faceless image. Candidates: known people and two bad files."""
    root = tmp_path_factory.mktemp("face_match")
    reference, candidates = root / "reference", root / "candidates"
    reference.mkdir()
    candidates.mkdir()
    angelina = person_photos(faces_dir, "angelina_jolie")
    for path in angelina[:3]:
        shutil.copy(path, reference / path.name)
    Image.new("RGB", (200, 150), (90, 140, 200)).save(reference / "sky.png")
    truth = {}  # candidate file -> is it Angelina Jolie (and not one of the reference photos)?
    for path in angelina[3:]:
        shutil.copy(path, candidates / f"angelina_{path.name}")
        truth[f"angelina_{path.name}"] = True
    for person in ("scarlett_johansson",):
        path = person_photos(faces_dir, person)[0]
        shutil.copy(path, candidates / f"{person}.jpg")
        truth[f"{person}.jpg"] = False
    shutil.copy(faces_dir / "_edge/kit_with_rose.jpg", candidates / "two_people.jpg")
    truth["two_people.jpg"] = False
    shutil.copy(angelina[0], candidates / "training_copy.jpg")
    truth["training_copy.jpg"] = False  # a near copy is not consistency
    (candidates / "broken.jpg").write_bytes(angelina[4].read_bytes()[:5000])
    truth["broken.jpg"] = False
    (candidates / "notes.txt").write_text("not an image, not a candidate")
    return reference, candidates, truth


def _run(*args: str):
    return CliRunner().invoke(main, ["face-match", *args], catch_exceptions=False)


def test_json_report_counts_matches(folders):
    reference, candidates, truth = folders
    result = _run("--reference", str(reference), "--candidates", str(candidates), "--json", "--workers", "1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)

    assert doc["reference"]["faces"] == 3
    assert doc["reference"]["skipped"] == [{"file": "sky.png", "reason": "no_face", "detail": "0 faces"}]
    rows = {row["file"]: row for row in doc["candidates"]}
    assert set(rows) == set(truth)
    assert {name for name, row in rows.items() if row["match"]} == {name for name, ok in truth.items() if ok}

    independent_matches = sum(truth.values())
    assert doc["summary"]["matched"] == independent_matches
    assert doc["summary"]["candidates"] == len(truth)
    assert doc["summary"]["match_rate"] == pytest.approx(independent_matches / len(truth), abs=1e-4)
    assert doc["summary"]["unreadable"] == 1

    assert rows["broken.jpg"]["flags"] == ["corrupt"] and rows["broken.jpg"]["face_count"] == 0
    assert rows["two_people.jpg"]["face_count"] == 2 and "several_faces" in rows["two_people.jpg"]["flags"]
    assert rows["training_copy.jpg"]["flags"] == ["near_copy"]


def test_table_output(folders):
    reference, candidates, truth = folders
    result = _run("--reference", str(reference), "--candidates", str(candidates), "--workers", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("reference: 3 face(s)") and "sky.png (no_face)" in lines[0]
    assert lines[1].split() == ["file", "distance", "match", "faces", "flags"]
    broken = next(line for line in lines if line.startswith("broken.jpg"))
    assert broken.split()[1:] == ["-", "no", "0", "corrupt"]
    matched = sum(truth.values())
    assert lines[-1] == (
        f"candidates: {len(truth)}  matched: {matched}  match rate: {matched / len(truth):.1%}  unreadable: 1"
    )


def test_missing_folder_is_a_clear_error(folders, tmp_path):
    reference, _, _ = folders
    result = _run("--reference", str(reference), "--candidates", str(tmp_path / "nowhere"))
    assert result.exit_code != 0
    assert result.output.strip() == f"Error: candidates folder not found: {tmp_path / 'nowhere'}"


def test_reference_without_a_usable_face_is_a_clear_error(tmp_path, folders):
    _, candidates, _ = folders
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    Image.new("RGB", (120, 120), (30, 30, 30)).save(faceless / "dark.png")
    (faceless / "junk.jpg").write_bytes(b"junk")
    result = _run("--reference", str(faceless), "--candidates", str(candidates), "--workers", "1")
    assert result.exit_code != 0
    assert "no usable face in reference folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
