"""Shared set-up of the GPU tests: one simulated GPU service per test process (real HTTP, in-process uvicorn),
training datasets built from the shared photos, and dlib face embeddings to judge who an image shows.

No tests here; the GPU, simulated-GPU and workflow tests import these helpers.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import person_photos
from lora_pipelines.gpu.schemas import TrainingResult, TrainingSpec

MODAL_KEY = "wk-test-key-5f1c9a7e"
MODAL_SECRET = "ws-test-secret-b83e0d42"
SAME_PERSON = 0.6
TRAIN_PERSON = "jennifer_aniston"
CROWD_PEOPLE = ("barack_obama", "katy_perry")


@functools.lru_cache(maxsize=1)
def _dlib():
    import dlib
    import face_recognition_models as frm

    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_model_location()),
            dlib.face_recognition_model_v1(frm.face_recognition_model_location()), dlib)


def embed(image: bytes | Path | Image.Image) -> np.ndarray | None:
    """128-d dlib descriptor of the largest face, or None when there is no face."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, Path):
        image = Image.open(image)
    image = image.convert("RGB")
    scale = min(1.0, 640 / max(image.size))
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    pixels = np.asarray(image)
    detector, predictor, recognizer, _ = _dlib()
    boxes = detector(pixels, 1)
    if not boxes:
        return None
    box = max(boxes, key=lambda b: b.area())
    return np.asarray(recognizer.compute_face_descriptor(pixels, predictor(pixels, box)))


def face_chip(path: Path, size: int = 256) -> Image.Image:
    """The aligned face crop a dataset builder would make (dlib get_face_chip)."""
    detector, predictor, _, dlib = _dlib()
    image = Image.open(path).convert("RGB")
    scale = min(1.0, 800 / max(image.size))
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    pixels = np.asarray(image)
    box = max(detector(pixels, 1), key=lambda b: b.area())
    return Image.fromarray(dlib.get_face_chip(pixels, predictor(pixels, box), size=size, padding=0.4))


@dataclass
class Sim:
    url: str
    home: Path
    data_root: Path
    server: object

    @property
    def loras_dir(self) -> Path:
        return self.home / "models" / "loras"


@functools.lru_cache(maxsize=1)
def shared_sim(faces_dir: Path) -> Sim:
    """The one simulated service of this test process, with Modal auth enforced and a crowd of two people."""
    from sim_gpu.server import SimGpuServer

    root = Path(tempfile.mkdtemp(prefix="lp-gpu-tests-"))
    home, data_root = root / "sim_home", root / "data"
    (home / "crowd").mkdir(parents=True)
    data_root.mkdir()
    for person in CROWD_PEOPLE:  # copied into a temp dir, never into the repository
        photo = person_photos(faces_dir, person)[0]
        shutil.copy(photo, home / "crowd" / f"{person}{photo.suffix}")
    server = SimGpuServer(home, allowed_roots=[data_root], modal_key=MODAL_KEY, modal_secret=MODAL_SECRET,
                          training_seconds=0.6).start()
    atexit.register(lambda: (server.stop(), shutil.rmtree(root, ignore_errors=True)))
    return Sim(url=server.url, home=server.home, data_root=data_root, server=server)


def dataset_zip(faces_dir: Path, person: str, dest_dir: Path, count: int = 5) -> tuple[Path, str, list[Path]]:
    """images/NNN.png face crops of `count` photos; returns (zip path, sha256, photos used)."""
    photos = person_photos(faces_dir, person)[:count]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, photo in enumerate(photos):
            png = io.BytesIO()
            face_chip(photo).save(png, format="PNG")
            archive.writestr(f"images/{i:03d}.png", png.getvalue())
            archive.writestr(f"images/{i:03d}.txt", f"{person}, a photo")
        archive.writestr("manifest.json", json.dumps({"person": person}))
    path = dest_dir / f"{person}-{count}.zip"
    path.write_bytes(buffer.getvalue())
    return path, hashlib.sha256(buffer.getvalue()).hexdigest(), photos


def training_spec(zip_path: Path, sha256: str, *, base_model: str, key: str, trigger: str = "jnfrstn",
                  character_id: str = "7", lora_model_id: str = "41") -> TrainingSpec:
    return TrainingSpec(character_id=character_id, lora_model_id=lora_model_id, base_model=base_model,
                        dataset_url=zip_path.as_uri(), dataset_sha256=sha256, trigger_word=trigger,
                        output_key=f"loras/{base_model}-character-{character_id}/{lora_model_id}.safetensors",
                        steps=1000, rank=16, idempotency_key=key)


def wait_done(backend, call_id: str, timeout_s: float = 30.0):
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        poll = backend.poll(call_id)
        if poll.state in ("succeeded", "failed", "lost") or time.monotonic() > deadline:
            return poll
        time.sleep(0.1)


@dataclass
class TrainedLora:
    call_id: str
    result: TrainingResult
    path: Path
    trigger: str
    photos: list[Path]
    lora_model_id: str


@functools.cache
def trained_lora(faces_dir: Path, base_model: str) -> TrainedLora:
    """Train (once per process and base model) a LoRA of TRAIN_PERSON on the shared service and download it."""
    from lora_pipelines.gpu.simulated import SimulatedTrainingBackend

    sim = shared_sim(faces_dir)
    zip_path, sha, photos = _dataset(faces_dir)
    lora_model_id = {"flux": "41", "qwen-image": "42", "z-image-turbo": "43"}.get(base_model, "49")
    backend = SimulatedTrainingBackend(sim.url)
    call_id = backend.submit_training(training_spec(zip_path, sha, base_model=base_model, key=f"train-{base_model}-1",
                                                    lora_model_id=lora_model_id))
    poll = wait_done(backend, call_id)
    assert poll.state == "succeeded", poll
    path = backend.fetch_artifact(poll.result, sim.data_root / f"{lora_model_id}.safetensors")
    return TrainedLora(call_id=call_id, result=poll.result, path=path, trigger="jnfrstn", photos=photos,
                       lora_model_id=lora_model_id)


@functools.lru_cache(maxsize=1)
def _dataset(faces_dir: Path) -> tuple[Path, str, list[Path]]:
    return dataset_zip(faces_dir, TRAIN_PERSON, shared_sim(faces_dir).data_root)


@functools.cache
def reference_embeddings(faces_dir: Path, person: str) -> tuple[np.ndarray, ...]:
    return tuple(e for e in (embed(p) for p in person_photos(faces_dir, person)) if e is not None)


def distance_to(embedding: np.ndarray | None, references: tuple[np.ndarray, ...]) -> float:
    """Distance to the person's mean embedding (inf when the image has no face)."""
    if embedding is None:
        return float("inf")
    return float(np.linalg.norm(embedding - np.mean(references, axis=0)))
