"""dlib vs SFace on the shared photos: separation, rates at each recogniser's threshold, embedding throughput.

    .venv/bin/python benchmarks/face_recognisers.py [--faces ../shared/faces] [--threads 1] [--limit N]

(--faces defaults to $LORA_PIPELINES_SHARED/faces when that is set.)

Each photo's largest face is embedded by both recognisers in this process (photos decoded beforehand; models
loaded before timing). Pairs: every two photos (MANIFEST.csv identities, _edge left out). dlib compares by
Euclidean distance (same person <= 0.6), SFace by cosine FaceSim (same person >= 0.363). "calibrated" is the
cut that best separates the pairs of this run (evaluation.calibrate_threshold), shown next to the threshold in use.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np

from lora_pipelines.faces.evaluation import calibrate_threshold, pair_scores, separation_auc
from lora_pipelines.faces.images import decode_image
from lora_pipelines.faces.recognisers import DlibRecogniser, Recogniser, SFaceRecogniser

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORA_PIPELINES_SHARED", REPO_ROOT.parent / "shared"))


def load_manifest(faces_dir: Path) -> list[tuple[Path, str]]:
    with open(faces_dir / "MANIFEST.csv", newline="") as fh:
        rows = [(faces_dir / row["file"], row["identity"]) for row in csv.DictReader(fh)]
    return [(path, identity) for path, identity in rows if not identity.startswith("_")]


def rates(recogniser: Recogniser, same: np.ndarray, different: np.ndarray, threshold: float) -> tuple[float, float]:
    """(same-person pairs matched, different-person pairs rejected) at threshold."""
    if recogniser.metric == "distance":
        return float(np.mean(same <= threshold)), float(np.mean(different > threshold))
    return float(np.mean(same >= threshold)), float(np.mean(different < threshold))


def measure(recogniser: Recogniser, images, identities) -> dict:
    start = time.perf_counter()
    faces = [recogniser.embed(img) for img in images]
    seconds = time.perf_counter() - start
    found = [(f[0].vector, ident) for f, ident in zip(faces, identities, strict=True) if f]
    same, different = pair_scores([v for v, _ in found], [i for _, i in found], recogniser.score)
    higher_is_same = recogniser.metric == "cosine"
    # separation_auc ranks distances: a cosine is turned into one by negating it
    auc = separation_auc(-same, -different) if higher_is_same else separation_auc(same, different)
    calibrated = calibrate_threshold(same, different, higher_is_same=higher_is_same)
    verdicts = {
        (a, b): recogniser.is_match(recogniser.score(va, vb))
        for a, (va, _) in enumerate(found)
        for b, (vb, _) in enumerate(found)
        if a < b
    }
    return {
        "images_per_s": len(images) / seconds,
        "missed": len(images) - len(found),
        "multi": sum(len(f) > 1 for f in faces),
        "auc": auc,
        "same": same,
        "different": different,
        "at_threshold": rates(recogniser, same, different, recogniser.threshold),
        "calibrated": calibrated,
        "at_calibrated": rates(recogniser, same, different, calibrated),
        "verdicts": verdicts if len(found) == len(images) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=SHARED / "faces")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads for SFace (dlib uses one).")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N photos.")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(args.threads)
    photos = load_manifest(args.faces)[: args.limit]
    images = [decode_image(path.read_bytes(), name=path.name) for path, _ in photos]
    identities = [identity for _, identity in photos]
    print(
        f"{len(images)} photos of {len(set(identities))} people from {args.faces}; OpenCV {cv2.__version__}, "
        f"{args.threads} OpenCV thread(s)"
    )

    recognisers = [DlibRecogniser(), SFaceRecogniser()]
    for recogniser in recognisers:
        recogniser.analyzer.warm_up()
    results = {r.name: measure(r, images, identities) for r in recognisers}

    base = results["dlib"]["images_per_s"]
    header = (
        f"{'recogniser':<10} {'score':<14} {'images/s':>8} {'vs dlib':>7} {'AUC':>8} {'same mean':>9} "
        f"{'diff mean':>9} {'threshold':>9} {'match':>7} {'reject':>7} {'calibrated':>10} {'match':>7} "
        f"{'reject':>7}  no face / several"
    )
    print(header)
    for r in recognisers:
        m = results[r.name]
        kind = "distance" if r.metric == "distance" else "cosine FaceSim"
        print(
            f"{r.name:<10} {kind:<14} {m['images_per_s']:8.2f} {m['images_per_s'] / base:6.2f}x {m['auc']:8.5f} "
            f"{m['same'].mean():9.3f} {m['different'].mean():9.3f} {r.threshold:9.3f} "
            f"{m['at_threshold'][0]:7.2%} {m['at_threshold'][1]:7.2%} {m['calibrated']:10.3f} "
            f"{m['at_calibrated'][0]:7.2%} {m['at_calibrated'][1]:7.2%}  {m['missed']} / {m['multi']}"
        )
    for r in recognisers:
        m = results[r.name]
        closest_same = m["same"].max() if r.metric == "distance" else m["same"].min()
        closest_diff = m["different"].min() if r.metric == "distance" else m["different"].max()
        print(
            f"{r.name}: {len(m['same'])} same-person pairs, the least alike scores {closest_same:.3f}; "
            f"{len(m['different'])} different-person pairs, the most alike scores {closest_diff:.3f}"
        )

    dlib_verdicts, sface_verdicts = results["dlib"]["verdicts"], results["sface"]["verdicts"]
    if dlib_verdicts is not None and sface_verdicts is not None:
        agree = sum(dlib_verdicts[k] == sface_verdicts[k] for k in dlib_verdicts)
        print(
            f"same/different verdicts agree on {agree} of {len(dlib_verdicts)} pairs ({agree / len(dlib_verdicts):.2%})"
        )


if __name__ == "__main__":
    main()
