"""`lora-pipelines face-match`: how many candidate images show the person in a reference folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lora_pipelines.faces.batch import BatchResult
    from lora_pipelines.faces.consistency import CharacterReference

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def _image_files(folder: Path, role: str) -> list[Path]:
    if not folder.exists():
        raise click.ClickException(f"{role} folder not found: {folder}")
    if not folder.is_dir():
        raise click.ClickException(f"{role} path is not a folder: {folder}")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise click.ClickException(f"cannot read {role} folder {folder}: {exc.strerror or exc}") from None
    return [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]


def _build_reference(results: list[BatchResult], files: list[Path], folder: Path) -> tuple[CharacterReference, dict]:
    """The reference from every image with exactly one face; the others are listed as skipped."""
    from lora_pipelines.faces.consistency import CharacterReference

    used, skipped = [], []
    for path, result in zip(files, results, strict=True):
        if not result.ok:
            skipped.append({"file": path.name, "reason": result.error_reason, "detail": result.error})
        elif len(result.faces) != 1:
            reason = "no_face" if not result.faces else "several_faces"
            skipped.append({"file": path.name, "reason": reason, "detail": f"{len(result.faces)} faces"})
        else:
            used.append((path.name, result.faces[0].embedding))
    if not used:
        raise click.ClickException(
            f"no usable face in reference folder {folder}: none of its {len(files)} images shows exactly one face"
        )
    reference = CharacterReference.from_embeddings([embedding for _, embedding in used])
    doc = {"folder": str(folder), "used": [name for name, _ in used], "skipped": skipped, **reference.summary()}
    return reference, doc


@click.command("face-match")
@click.option("--reference", "reference_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of photos of one person.")
@click.option("--candidates", "candidates_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of images to score.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option("--workers", type=int, default=None, help="Processes for face analysis (default: all cores).")
def face_match(reference_dir: Path, candidates_dir: Path, as_json: bool, workers: int | None) -> None:
    """Score every image in CANDIDATES against the face in the REFERENCE photos (dlib distance)."""
    from lora_pipelines.faces.batch import FacePool
    from lora_pipelines.faces.consistency import corrupt_score, score_faces

    reference_files = _image_files(reference_dir, "reference")
    candidate_files = _image_files(candidates_dir, "candidates")
    if not reference_files:
        raise click.ClickException(f"no JPEG/PNG/WebP images in reference folder {reference_dir}")

    with FacePool(workers or os.cpu_count()) as pool:
        reference, reference_doc = _build_reference(pool.analyze_many(reference_files), reference_files, reference_dir)
        candidate_results = pool.analyze_many(candidate_files)

    rows = []
    for path, result in zip(candidate_files, candidate_results, strict=True):
        score = score_faces(result.faces, reference) if result.ok else corrupt_score(reference, result.error or "")
        rows.append({"file": path.name, **score.as_dict()})
    matched = sum(row["match"] for row in rows)
    summary = {
        "candidates": len(rows),
        "matched": matched,
        "match_rate": round(matched / len(rows), 4) if rows else None,  # over all candidates, unreadable included
        "unreadable": sum("corrupt" in row["flags"] for row in rows),
        "no_face": sum("no_face" in row["flags"] for row in rows),
    }

    if as_json:
        click.echo(json.dumps({"reference": reference_doc, "candidates": rows, "summary": summary}, indent=2))
        return
    skipped = reference_doc["skipped"]
    skipped_text = ", ".join(f"{s['file']} ({s['reason']})" for s in skipped)
    click.echo(
        f"reference: {len(reference.embeddings)} face(s) from {reference_dir}, threshold {reference.threshold:.3f}"
        + (f"; skipped {skipped_text}" if skipped else "")
    )
    width = max([len("file"), *(len(row["file"]) for row in rows)])
    click.echo(f"{'file':<{width}}  distance  match  faces  flags")
    for row in rows:
        distance = "-" if row["distance"] is None else f"{row['distance']:.3f}"
        click.echo(
            f"{row['file']:<{width}}  {distance:>8}  {'yes' if row['match'] else 'no':<5}  {row['face_count']:>5}  "
            f"{','.join(row['flags'])}"
        )
    rate = "-" if summary["match_rate"] is None else f"{summary['match_rate']:.1%}"
    click.echo(
        f"candidates: {summary['candidates']}  matched: {matched}  match rate: {rate}  "
        f"unreadable: {summary['unreadable']}"
    )
