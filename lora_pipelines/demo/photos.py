"""Demo photos from a registry package: the face_recognition 1.3.0 sdist ships real test photos.

It is downloaded with pip (the package registry is reachable where this runs) and only its photos are used;
the package itself is never installed. Cached under LORA_PIPELINES_HOME.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "face_recognition==1.3.0"
PHOTOS = {
    "Barack Obama": ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg"],
    "Joe Biden": ["biden.jpg"],
}


class DemoPhotosUnavailable(RuntimeError):
    pass


def fetch_demo_photos(cache_dir: Path) -> dict[str, Path]:
    """name -> folder of that person's photos (downloaded once; folders already there are used as they are)."""
    folders = {name: cache_dir / name.lower().replace(" ", "_") for name in PHOTOS}
    if all(folder.is_dir() and any(folder.iterdir()) for folder in folders.values()):
        return folders
    download = cache_dir / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(download),
           SDIST]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(download.glob("face_recognition-1.3.0*.tar.gz"))
    if done.returncode != 0 or not archives:
        raise DemoPhotosUnavailable(f"could not download {SDIST} from the package index: {done.stderr.strip()[-300:]}")
    with tarfile.open(archives[0]) as tar:
        for name, files in PHOTOS.items():
            folders[name].mkdir(parents=True, exist_ok=True)
            for file_name in files:
                member = tar.getmember(f"face_recognition-1.3.0/tests/test_images/{file_name}")
                (folders[name] / file_name).write_bytes(tar.extractfile(member).read())
    return folders
