"""Analyse many photos in a process pool; each worker loads dlib's models once."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lora_pipelines.faces.embeddings import DetectedFace, FaceAnalyzer
from lora_pipelines.faces.images import ImageDecodeError, decode_image

Source = str | os.PathLike | bytes


@dataclass(frozen=True)
class BatchResult:
    """Outcome for one input, in input order: faces, or an error (reason + message) that did not stop the batch."""

    index: int
    name: str
    faces: list[DetectedFace] | None = None
    image_size: tuple[int, int] | None = None
    error: str | None = None
    error_reason: str | None = None  # "corrupt_image" | "too_large" | "unreadable" | "worker_failed"

    @property
    def ok(self) -> bool:
        return self.error is None


_worker_analyzer: FaceAnalyzer | None = None


def _init_worker() -> None:
    global _worker_analyzer
    _worker_analyzer = FaceAnalyzer()
    _worker_analyzer.warm_up()


def _name_of(source: Source, index: int) -> str:
    return f"#{index}" if isinstance(source, bytes) else os.fspath(source)


def _analyze_one(
    analyzer: FaceAnalyzer, index: int, source: Source, detect_max_side: int | None, upsample: int
) -> BatchResult:
    name = _name_of(source, index)
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        return BatchResult(index, name, error=f"{name}: cannot read ({exc.strerror or exc})", error_reason="unreadable")
    try:
        img = decode_image(data, name=Path(name).name)
    except ImageDecodeError as exc:
        return BatchResult(index, name, error=str(exc), error_reason=exc.reason)
    faces = analyzer.analyze(img, detect_max_side=detect_max_side, upsample=upsample)
    return BatchResult(index, name, faces=faces, image_size=img.size)


def _analyze_chunk(chunk: list[tuple[int, Source]], detect_max_side: int | None, upsample: int) -> list[BatchResult]:
    assert _worker_analyzer is not None, "worker started without _init_worker"
    return [_analyze_one(_worker_analyzer, i, src, detect_max_side, upsample) for i, src in chunk]


def analyze_many(
    sources: Sequence[Source],
    *,
    workers: int | None = None,
    detect_max_side: int | None = 800,
    upsample: int = 1,
    chunk_size: int = 4,
    analyzer: FaceAnalyzer | None = None,
) -> list[BatchResult]:
    """Faces in every photo (paths or bytes), in input order; a bad photo yields an error result, not an exception.

    workers=1 (or a single input) runs in this process with `analyzer`; otherwise a pool of
    `workers` processes (default: all cores) started with forkserver, safe inside threaded hosts.
    """
    items = list(enumerate(sources))
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1 or len(items) <= 1:
        analyzer = analyzer or FaceAnalyzer()
        return [_analyze_one(analyzer, i, src, detect_max_side, upsample) for i, src in items]

    # Small chunks keep both cores busy to the end; each chunk costs one round trip of pickled faces.
    chunk_size = max(1, min(chunk_size, -(-len(items) // workers)))
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(_analyze_chunk, chunk, detect_max_side, upsample) for chunk in chunks]
        results = []
        for chunk, future in zip(chunks, futures):
            try:
                results.extend(future.result())
            except Exception as exc:  # noqa: BLE001 - a crashed worker fails its chunk, not the batch
                message = f"face analysis worker failed ({exc.__class__.__name__}: {exc})"
                results.extend(
                    BatchResult(i, _name_of(src, i), error=f"{_name_of(src, i)}: {message}", error_reason="worker_failed")
                    for i, src in chunk
                )
    return results
