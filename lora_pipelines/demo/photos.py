"""Demo photos from registry packages, real photos both:

- the face_recognition 1.3.0 sdist's test images (MIT): Barack Obama x5 and Joe Biden x1;
- the insightface 2.1 sdist's sample image (MIT): Tom Hanks x1, a 112 px face crop.

They are downloaded with pip (the package registry is reachable where this runs) and only their photos are used;
the packages themselves are never installed. Cached under LORA_PIPELINES_HOME.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

# sdist -> (folder inside the archive, {person: [photo file names]})
SOURCES = {
    "face_recognition==1.3.0": ("face_recognition-1.3.0/tests/test_images", {
        "Barack Obama": ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg"],
        "Joe Biden": ["biden.jpg"],
    }),
    "insightface==2.1": ("insightface-2.1/insightface/data/images", {"Tom Hanks": ["Tom_Hanks_54745.png"]}),
}
PHOTOS = {person: files for _, people in SOURCES.values() for person, files in people.items()}


class DemoPhotosUnavailable(RuntimeError):
    pass


def folder_name(person: str) -> str:
    return person.lower().replace(" ", "_")


def fetch_demo_photos(cache_dir: Path) -> dict[str, Path]:
    """name -> folder of that person's photos (downloaded once; folders already there are used as they are).

    A folder given for some people only (LORA_PIPELINES_DEMO_PHOTOS_DIR) keeps those; the others are downloaded."""
    folders = {name: cache_dir / folder_name(name) for name in PHOTOS}
    for sdist, (inside, people) in SOURCES.items():
        if all(folders[name].is_dir() and any(folders[name].iterdir()) for name in people):
            continue
        archive = _download(sdist, cache_dir / "sdist")
        with tarfile.open(archive) as tar:
            for name, files in people.items():
                folders[name].mkdir(parents=True, exist_ok=True)
                for file_name in files:
                    member = tar.getmember(f"{inside}/{file_name}")
                    (folders[name] / file_name).write_bytes(tar.extractfile(member).read())
    return folders


def _download(sdist: str, download: Path) -> Path:
    project, version = sdist.split("==")
    download.mkdir(parents=True, exist_ok=True)
    archives = sorted(download.glob(f"{project}-{version}*.tar.gz"))
    if archives:
        return archives[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(download),
           sdist]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(download.glob(f"{project}-{version}*.tar.gz"))
    if done.returncode != 0 or not archives:
        raise DemoPhotosUnavailable(f"could not download {sdist} from the package index: {done.stderr.strip()[-300:]}")
    return archives[0]
