"""Training calls of the simulated GPU service, shaped like Modal FunctionCalls.

A call runs in a background thread: fetch the dataset zip, verify its sha256, crop the faces, "train" for a
configurable time with progress, write a valid LoRA file carrying the crops (for Wan 2.2 14B a high_noise +
low_noise pair, as ai-toolkit writes it), and for a single-file LoRA one file per checkpoint the spec asks for, each
recording its own step count (so its likeness is that of its training stage: sim_gpu/likeness.py). Finished calls
are kept on disk under {home}/calls so a restarted service still answers for them; calls running at a restart are
lost.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.checkpoints import checkpoint_steps
from lora_pipelines.gpu.schemas import CheckpointFile, ExpertFile, TrainingPoll, TrainingResult, TrainingSpec
from sim_gpu.faces import find_face, square_resize
from sim_gpu.files import FetchRefused, fetch_url, lora_file_bytes, sha256_hex
from sim_gpu.likeness import diversity
from sim_gpu.nobody import DESCRIPTORS_FILE

MAX_TRAINING_IMAGES = 24
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class TrainingCall:
    call_id: str
    spec: TrainingSpec
    state: str = "queued"
    progress: float = 0.0
    result: TrainingResult | None = None
    error: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> TrainingPoll:
        return TrainingPoll(call_id=self.call_id, state=self.state, progress=round(self.progress, 1),
                            result=self.result, error=self.error)


class TrainingCalls:
    def __init__(self, home: Path, allowed_roots: Sequence[Path], *, duration_s: float = 1.5,
                 count: Callable[[str], None] = lambda event: None) -> None:
        self.home = home
        self.allowed_roots = list(allowed_roots)
        self.duration_s = duration_s
        self._count = count
        self._lock = threading.Lock()
        self._calls: dict[str, TrainingCall] = {}
        self._by_key: dict[str, str] = {}
        self.calls_dir = home / "calls"
        self.files_dir = home / "trained"
        self.characters_dir = home / "characters"
        for folder in (self.calls_dir, self.files_dir, self.characters_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._load_finished()

    def spawn(self, spec: TrainingSpec, *, base_url: str, fail_reason: str | None = None, lost: bool = False) -> str:
        with self._lock:
            existing = self._by_key.get(spec.idempotency_key)
            if existing and existing in self._calls:
                return existing
            call = TrainingCall(call_id=f"fc-{uuid.uuid4().hex[:24]}", spec=spec)
            self._calls[call.call_id] = call
            self._by_key[spec.idempotency_key] = call.call_id
        threading.Thread(target=self._run, args=(call, base_url, fail_reason, lost), daemon=True,
                         name=f"sim-train-{call.call_id}").start()
        return call.call_id

    def get(self, call_id: str) -> TrainingCall | None:
        with self._lock:
            return self._calls.get(call_id)

    def cancel(self, call_id: str) -> TrainingCall | None:
        call = self.get(call_id)
        if call is not None and call.state in ("queued", "running"):
            call.cancelled.set()
        return call

    def file_path(self, call_id: str, expert: str | None = None, step: int | None = None) -> Path:
        """`{call_id}.safetensors`, `{call_id}.{expert}.safetensors` for one file of a two-expert pair, or
        `{call_id}.step{step:06d}.safetensors` for a checkpoint before the last step."""
        part = f".{expert}" if expert else (f".step{step:06d}" if step is not None else "")
        return self.files_dir / f"{call_id}{part}.safetensors"

    def remove_files(self, call_id: str, only: list[str] | None = None) -> list[str]:
        """Delete the call's trained files (every one, or `only` those named "final", "step000250", "low_noise"...);
        returns the names of the files removed."""
        removed = []
        for path in sorted(self.files_dir.glob(f"{call_id}.*safetensors")):
            part = path.name.removeprefix(f"{call_id}.").removesuffix("safetensors").rstrip(".") or "final"
            if only is None or part in only:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    def _forget(self, call: TrainingCall) -> None:
        with self._lock:
            self._calls.pop(call.call_id, None)
            if self._by_key.get(call.spec.idempotency_key) == call.call_id:
                del self._by_key[call.spec.idempotency_key]

    def _run(self, call: TrainingCall, base_url: str, fail_reason: str | None, lost: bool) -> None:
        try:
            self._train(call, base_url, fail_reason)
        except _Failed as exc:
            call.state, call.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a crashed trainer is a failed call, not a dead thread
            call.state, call.error = "failed", f"trainer crashed: {type(exc).__name__}: {exc}"
        if lost:
            self._forget(call)
            return
        self._save(call)

    def _train(self, call: TrainingCall, base_url: str, fail_reason: str | None) -> None:
        spec = call.spec
        time.sleep(min(0.1, self.duration_s / 10))
        call.state, call.progress = "running", 1.0
        try:
            data = fetch_url(spec.dataset_url, self.allowed_roots)
        except (FetchRefused, OSError) as exc:
            raise _Failed(f"dataset download failed: {exc}") from None
        self._count("dataset_downloads")
        if sha256_hex(data) != spec.dataset_sha256:
            raise _Failed(
                f"dataset checksum mismatch: expected {spec.dataset_sha256[:12]}…, got {sha256_hex(data)[:12]}…")
        faces, descriptors = _dataset_faces(data)
        photos = _dataset_photos(data)
        call.progress = 10.0
        ticks = 10
        for i in range(ticks):
            if call.cancelled.is_set():
                raise _Failed("cancelled")
            time.sleep(self.duration_s / ticks)
            call.progress = 10.0 + 85.0 * (i + 1) / ticks
            if fail_reason and i == ticks // 2:
                raise _Failed(fail_reason)
        # Wan 2.2 14B is two files (high_noise, low_noise), as ai-toolkit writes it; the first is the primary file
        written = [self._write_file(call, base_url, faces, descriptors, expert, index, photos=photos)
                   for index, expert in enumerate(lora_experts(spec.base_model) or (None,))]
        self._remember_character(spec.character_id, faces, descriptors)
        (expert, primary), *rest = written
        second = None
        if rest:
            (second_expert, second_file), = rest
            second = ExpertFile(expert=second_expert, **second_file)
        checkpoints = []
        if not rest and spec.checkpoints > 1:  # the earlier saves, then the final file as the last checkpoint
            checkpoints = [CheckpointFile(step=step, **self._write_file(call, base_url, faces, descriptors, None, 0,
                                                                         step=step, photos=photos)[1])
                           for step in checkpoint_steps(spec.steps, spec.checkpoints)[:-1]]
            checkpoints.append(CheckpointFile(step=spec.steps, **primary))
        call.result = TrainingResult(base_model=spec.base_model, trigger_word=spec.trigger_word, **primary,
                                     backend="simulated", expert=expert, second_expert=second,
                                     checkpoints=checkpoints)
        call.state, call.progress = "succeeded", 100.0

    def _write_file(self, call: TrainingCall, base_url: str, faces: list[np.ndarray], descriptors: list[np.ndarray],
                    expert: str | None, index: int, step: int | None = None,
                    photos: list[bytes] | None = None) -> tuple[str | None, dict]:
        """One trained file on disk (the final one, or the checkpoint at `step`); returns (expert, its location
        fields of TrainingResult / ExpertFile / CheckpointFile)."""
        spec = call.spec
        payload = lora_file_bytes(base_model=spec.base_model, trigger_word=spec.trigger_word, rank=spec.rank,
                                  steps=spec.steps if step is None else step, faces=faces,
                                  character_id=spec.character_id,
                                  seed=int(spec.dataset_sha256[:8], 16) + index, expert=expert,
                                  dataset_hash=spec.dataset_hash, photos=len(faces), diversity=diversity(descriptors),
                                  photo_jpegs=photos or ())
        path = self.file_path(call.call_id, expert, step)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)
        return expert, {"sha256": sha256_hex(payload), "size_bytes": len(payload),
                        "download_url": f"{base_url.rstrip('/')}/files/{path.name}", "volume_path": str(path)}

    def _remember_character(self, character_id: str, faces: list[np.ndarray], descriptors: list[np.ndarray]) -> None:
        """Keep the crops and their descriptors: the nobody pool leaves out every face that looks like them."""
        folder = self.characters_dir / character_id
        folder.mkdir(parents=True, exist_ok=True)
        for i, face in enumerate(faces):
            Image.fromarray(face).save(folder / f"{i:03d}.png")
        if descriptors:
            known = folder / DESCRIPTORS_FILE
            previous = [np.load(known)] if known.exists() else []
            tmp = folder / "descriptors.tmp.npy"
            np.save(tmp, np.concatenate([*previous, np.stack(descriptors)]).astype(np.float32))
            tmp.replace(known)

    def _save(self, call: TrainingCall) -> None:
        if call.state not in ("succeeded", "failed"):
            return
        record = {"call_id": call.call_id, "spec": call.spec.model_dump(), "state": call.state,
                  "result": call.result.model_dump() if call.result else None, "error": call.error}
        (self.calls_dir / f"{call.call_id}.json").write_text(json.dumps(record))

    def _load_finished(self) -> None:
        for path in self.calls_dir.glob("fc-*.json"):
            try:
                record = json.loads(path.read_text())
                call = TrainingCall(call_id=record["call_id"], spec=TrainingSpec(**record["spec"]),
                                    state=record["state"],
                                    progress=100.0 if record["state"] == "succeeded" else 0.0,
                                    result=TrainingResult(**record["result"]) if record["result"] else None,
                                    error=record["error"])
            except (ValueError, KeyError, TypeError):
                continue
            self._calls[call.call_id] = call
            self._by_key[call.spec.idempotency_key] = call.call_id


class _Failed(Exception):
    pass


def _dataset_faces(zip_bytes: bytes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The aligned crop of every training image (a centre square where no face is found) and the dlib
    descriptors of the faces found."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile:
        raise _Failed("dataset is not a zip file") from None
    names = sorted(n for n in archive.namelist()
                   if n.startswith("images/") and n.lower().endswith(IMAGE_SUFFIXES) and not n.endswith("/"))
    if not names:
        raise _Failed("dataset zip has no images/*.png")
    faces, descriptors = [], []
    for name in names[:MAX_TRAINING_IMAGES]:
        try:
            image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
        except OSError:
            raise _Failed(f"dataset image {name} is not readable") from None
        found = find_face(image)
        faces.append(found.crop if found is not None else square_resize(image))
        if found is not None:
            descriptors.append(found.descriptor)
    return faces, descriptors


COPY_PHOTO_SIDE = 384  # what an over-trained LoRA reproduces: SFace still finds the photo in it (FaceSim >= 0.92)


def _dataset_photos(zip_bytes: bytes) -> list[bytes]:
    """The training images themselves, at most COPY_PHOTO_SIDE pixels a side, as JPEG (what a LoRA can memorise)."""
    archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    names = sorted(n for n in archive.namelist()
                   if n.startswith("images/") and n.lower().endswith(IMAGE_SUFFIXES) and not n.endswith("/"))
    photos = []
    for name in names[:MAX_TRAINING_IMAGES]:
        image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
        image.thumbnail((COPY_PHOTO_SIDE, COPY_PHOTO_SIDE))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=92)
        photos.append(out.getvalue())
    return photos
