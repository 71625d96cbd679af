"""Analyse many photos in a process pool; each worker loads dlib's models once."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lora_pipelines.faces.embeddings import DetectedFace, FaceAnalyzer, default_analyzer
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
    _worker_analyzer = default_analyzer()
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


class FacePool:
    """Face analysis for many photos: `workers` processes (started on first use, reused until close), or this process
    when workers=1. Workers start with forkserver, which is safe inside threaded hosts such as Dagster."""

    def __init__(self, workers: int | None = None, *, analyzer: FaceAnalyzer | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._analyzer = analyzer
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> FacePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def analyze_many(
        self, sources: Sequence[Source], *, detect_max_side: int | None = 800, upsample: int = 1, chunk_size: int = 4
    ) -> list[BatchResult]:
        """Faces in every photo (paths or bytes), in input order.

        A bad photo yields an error result, not an exception."""
        items = list(enumerate(sources))
        if self.workers == 1 or (self._executor is None and len(items) <= 1):
            self._analyzer = self._analyzer or default_analyzer()
            return [_analyze_one(self._analyzer, i, src, detect_max_side, upsample) for i, src in items]

        # Small chunks keep every core busy to the end; each chunk costs one round trip of pickled faces.
        chunk_size = max(1, min(chunk_size, -(-len(items) // self.workers)))
        chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker)
        futures = [self._executor.submit(_analyze_chunk, chunk, detect_max_side, upsample) for chunk in chunks]
        results: list[BatchResult] = []
        broken = False
        for chunk, future in zip(chunks, futures, strict=True):
            try:
                results.extend(future.result())
            except Exception as exc:  # noqa: BLE001 - a crashed worker fails its chunk, not the batch
                broken = True
                message = f"face analysis worker failed ({exc.__class__.__name__}: {exc})"
                results.extend(
                    BatchResult(i, _name_of(src, i), error=f"{_name_of(src, i)}: {message}",
                                error_reason="worker_failed")
                    for i, src in chunk
                )
        if broken:
            self.close()  # a broken pool refuses all further work; the next call starts a fresh one
        return results


def analyze_many(
    sources: Sequence[Source],
    *,
    workers: int | None = None,
    detect_max_side: int | None = 800,
    upsample: int = 1,
    chunk_size: int = 4,
    analyzer: FaceAnalyzer | None = None,
) -> list[BatchResult]:
    """One batch through a temporary FacePool (workers default: all cores; 1 = this process, with `analyzer`)."""
    with FacePool(workers, analyzer=analyzer) as pool:
        return pool.analyze_many(sources, detect_max_side=detect_max_side, upsample=upsample, chunk_size=chunk_size)


def _init_background_worker() -> None:
    """A worker that yields the CPU to the processes others wait for."""
    os.nice(10)
    _init_worker()


def _analyze_image(img: Image.Image, options: dict) -> list[DetectedFace]:
    assert _worker_analyzer is not None, "worker started without _init_worker"
    return _worker_analyzer.analyze(img, **options)


class ProcessAnalyzer:
    """A FaceAnalyzer whose `analyze` runs in `workers` processes (started on first use). dlib keeps the GIL while
    it works, so analysing in the caller's process would stall its other threads; callers wait in threads."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                self._executor = ProcessPoolExecutor(self.workers, mp_context=context,
                                                     initializer=_init_background_worker)
            return self._executor

    def warm_up(self) -> None:
        """The workers load the models as they start; nothing to do here."""

    def analyze(self, img: Image.Image, **options) -> list[DetectedFace]:
        pool = self._pool()
        try:
            return pool.submit(_analyze_image, img, options).result()
        except BrokenProcessPool:
            with self._lock:  # the next call starts a fresh pool
                if self._executor is pool:
                    self._executor = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(cancel_futures=True)
