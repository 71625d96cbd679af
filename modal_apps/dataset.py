"""Fetch the dataset zip, check its sha256, unpack it safely into the flat folder ai-toolkit reads."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modal_apps.transfer import DownloadError, redact, sha256_file, stream_to_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_ZIP_BYTES = 2 * 1024**3
MAX_UNPACKED_BYTES = 4 * 1024**3


class DatasetError(ValueError):
    """The dataset could not be fetched, did not match its checksum, or is not a usable zip."""


@dataclass(frozen=True)
class PreparedDataset:
    folder: Path
    images: int
    captions_written: int


def download(url: str, dest: Path, *, timeout: float = 300.0) -> Path:
    """Stream `url` (http(s), file:// or a local path such as a CloudBucketMount) to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("file://") or url.startswith("/"):
        source = Path(url.removeprefix("file://"))
        if not source.is_file():
            raise DatasetError(f"dataset file {source} does not exist")
        shutil.copyfile(source, dest)
        return dest
    if not url.startswith(("http://", "https://")):
        raise DatasetError(f"dataset URL must be http(s), file:// or an absolute path, got {redact(url)[:80]!r}")
    try:
        return stream_to_file(url, dest, max_bytes=MAX_ZIP_BYTES, what="dataset", timeout=timeout)
    except DownloadError as exc:
        raise DatasetError(str(exc)) from None


def _safe_member(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for directories; raises on absolute paths and '..' (zip slip)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DatasetError(f"dataset zip member {name[:80]!r} would escape the dataset folder")
    if name.endswith("/"):
        return None
    return path


def unpack_flat(zip_path: Path, folder: Path, *, trigger_word: str) -> PreparedDataset:
    """Images and their `.txt` captions into one folder (ai-toolkit pairs `x.jpg` with `x.txt`).

    Members may sit in sub-folders; a caption pairs with the image of the same stem in the same folder.
    An image without a caption gets the trigger word as its caption. Other files (manifest.json) are skipped.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{zip_path.name} is not a zip file") from None
    folder.mkdir(parents=True, exist_ok=True)
    with archive:
        infos = [(info, _safe_member(info.filename)) for info in archive.infolist()]
        if sum(info.file_size for info, _ in infos) > MAX_UNPACKED_BYTES:
            raise DatasetError(f"dataset zip unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        captions = {
            (str(path.parent), path.stem): info for info, path in infos if path and path.suffix.lower() == ".txt"
        }
        images = written = 0
        for info, path in infos:
            if path is None or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            # Flat names stay unique even when two sub-folders hold the same file name.
            stem = f"{images:04d}_{path.stem}"
            target = folder / f"{stem}{path.suffix.lower()}"
            with archive.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            caption_info = captions.get((str(path.parent), path.stem))
            caption = archive.read(caption_info).decode("utf-8", "replace").strip() if caption_info else ""
            if not caption:
                caption, written = trigger_word, written + 1
            (folder / f"{stem}.txt").write_text(caption, encoding="utf-8")
            images += 1
    if images == 0:
        raise DatasetError(f"dataset zip {zip_path.name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return PreparedDataset(folder=folder, images=images, captions_written=written)


def prepare_dataset(url: str, expected_sha256: str, work_dir: Path, *, trigger_word: str) -> PreparedDataset:
    """Download, verify and unpack: the folder a trainer config points at."""
    zip_path = download(url, work_dir / "dataset.zip")
    actual = sha256_file(zip_path)
    if actual != expected_sha256:
        raise DatasetError(f"dataset sha256 is {actual}, the spec expects {expected_sha256}")
    return unpack_flat(zip_path, work_dir / "images", trigger_word=trigger_word)
