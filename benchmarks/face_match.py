"""Throughput and accuracy of face analysis: our pipeline vs a naive full-size baseline.

    .venv/bin/python benchmarks/face_match.py [--faces ../shared/faces] [--workers 2] [--limit N]

Pipeline: photos downscaled to 800 px for detection, analysed in a process pool (all cores).
Baseline: full-size photos, one at a time, HOG upsample=1, one process.
AUC: same-person vs different-person pair distances (largest face per photo; MANIFEST.csv identities).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

from lora_pipelines.faces.batch import analyze_many
from lora_pipelines.faces.embeddings import FaceAnalyzer
from lora_pipelines.faces.evaluation import pair_distances, separation_auc
from lora_pipelines.faces.images import decode_image

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_manifest(faces_dir: Path) -> list[tuple[Path, str]]:
    with open(faces_dir / "MANIFEST.csv", newline="") as fh:
        rows = [(faces_dir / row["file"], row["identity"]) for row in csv.DictReader(fh)]
    return [(path, identity) for path, identity in rows if not identity.startswith("_")]


def auc_of(faces_per_photo, identities) -> tuple[float, int]:
    pairs = [(faces[0].embedding, ident) for faces, ident in zip(faces_per_photo, identities, strict=True) if faces]
    same, different = pair_distances([e for e, _ in pairs], [i for _, i in pairs])
    return separation_auc(same, different), len(faces_per_photo) - len(pairs)


def run_pipeline(paths: list[Path], workers: int):
    start = time.perf_counter()
    results = analyze_many(paths, workers=workers, detect_max_side=800, upsample=1)
    elapsed = time.perf_counter() - start
    return [r.faces or [] for r in results], elapsed


def run_baseline(paths: list[Path]):
    analyzer = FaceAnalyzer()
    analyzer.warm_up()  # model loading is not part of per-image cost in either measurement's steady state
    start = time.perf_counter()
    faces = []
    for path in paths:
        img = decode_image(path.read_bytes(), name=path.name)
        faces.append(analyzer.analyze(img, detect_max_side=None, upsample=1))
    return faces, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=REPO_ROOT.parent / "shared" / "faces")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N photos.")
    args = parser.parse_args()

    photos = load_manifest(args.faces)[: args.limit]
    paths = [p for p, _ in photos]
    identities = [i for _, i in photos]
    print(f"{len(paths)} photos of {len(set(identities))} people from {args.faces}; {os.cpu_count()} cores")

    pipe_faces, pipe_s = run_pipeline(paths, args.workers)
    pipe_auc, pipe_missed = auc_of(pipe_faces, identities)
    print(f"pipeline  (800 px, {args.workers} workers): {len(paths) / pipe_s:6.2f} images/s  "
          f"({pipe_s:.1f} s incl. pool start)  "
          f"AUC {pipe_auc:.4f}  photos without a face: {pipe_missed}")

    base_faces, base_s = run_baseline(paths)
    base_auc, base_missed = auc_of(base_faces, identities)
    print(f"baseline  (full size, 1 process):   {len(paths) / base_s:6.2f} images/s  ({base_s:.1f} s)  "
          f"AUC {base_auc:.4f}  photos without a face: {base_missed}")
    print(f"speed-up: {base_s / pipe_s:.2f}x")


if __name__ == "__main__":
    main()
