"""The pod's LoRA cache: hits, one download under concurrency (threads and processes), LRU eviction that
spares files in use, and corrupt downloads that leave nothing behind."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lora_pipelines.domain.keys import InvalidIdError
from lora_pipelines.gpu.pod_cache import LoraChecksumError, ensure_lora_on_pod, use_lora

BUDGET = 10_000


def payload(name: str, size: int = 3000) -> tuple[bytes, str]:
    data = (name.encode() * size)[:size]
    return data, hashlib.sha256(data).hexdigest()


class CountingFetch:
    """Writes the file slowly and counts how often it was asked to."""

    def __init__(self, data: bytes, delay_s: float = 0.2) -> None:
        self.data, self.delay_s, self.calls = data, delay_s, 0
        self._lock = threading.Lock()

    def __call__(self, dest: Path) -> None:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        dest.write_bytes(self.data)


def test_cache_hit_does_not_download_again(tmp_path):
    data, sha = payload("a")
    fetch = CountingFetch(data, 0)
    first = ensure_lora_on_pod("101", sha, fetch, tmp_path, BUDGET)
    second = ensure_lora_on_pod("101", sha, fetch, tmp_path, BUDGET)
    assert first == second == tmp_path / "101.safetensors"
    assert first.read_bytes() == data and fetch.calls == 1


def test_eight_threads_download_once(tmp_path):
    data, sha = payload("b")
    fetch = CountingFetch(data)
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: ensure_lora_on_pod("102", sha, fetch, tmp_path, BUDGET), range(8)))
    assert fetch.calls == 1
    assert set(paths) == {tmp_path / "102.safetensors"}
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["102.safetensors"]
    assert not list(tmp_path.glob("*.part"))


def _process_worker(root: str, sha: str, data: bytes, marker_dir: str) -> None:
    def fetch(dest: Path) -> None:
        Path(marker_dir, f"download-{os.getpid()}").touch()
        time.sleep(0.3)
        dest.write_bytes(data)

    ensure_lora_on_pod("103", sha, fetch, Path(root), BUDGET)


def test_processes_download_once(tmp_path):
    data, sha = payload("c")
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_worker, args=(str(tmp_path / "loras"), sha, data, str(markers)))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(list(markers.iterdir())) == 1
    assert (tmp_path / "loras" / "103.safetensors").read_bytes() == data


def test_corrupt_download_is_rejected_and_leaves_no_file(tmp_path):
    data, sha = payload("d")
    with pytest.raises(LoraChecksumError, match="expected"):
        ensure_lora_on_pod("104", sha, CountingFetch(data[:-10] + b"0123456789", 0), tmp_path, BUDGET)
    assert not list(tmp_path.glob("104.safetensors")) and not list(tmp_path.glob("*.part"))
    # a later good download still works
    assert ensure_lora_on_pod("104", sha, CountingFetch(data, 0), tmp_path, BUDGET).read_bytes() == data


def test_a_bad_file_already_on_disk_is_replaced(tmp_path):
    data, sha = payload("e")
    (tmp_path / "105.safetensors").write_bytes(b"stale")
    fetch = CountingFetch(data, 0)
    assert ensure_lora_on_pod("105", sha, fetch, tmp_path, BUDGET).read_bytes() == data
    assert fetch.calls == 1


def test_lru_eviction_keeps_files_in_use(tmp_path):
    files = {name: payload(name) for name in ("201", "202", "203", "204")}  # 3000 bytes each, budget 10000
    for name in ("201", "202", "203"):
        ensure_lora_on_pod(name, files[name][1], CountingFetch(files[name][0], 0), tmp_path, BUDGET)
        time.sleep(0.02)
    os.utime(tmp_path / "201.safetensors", (time.time() - 100, time.time() - 100))  # oldest
    os.utime(tmp_path / "202.safetensors", (time.time() - 50, time.time() - 50))
    with use_lora("201", files["201"][1], CountingFetch(files["201"][0], 0), tmp_path, BUDGET * 10):
        os.utime(tmp_path / "201.safetensors", (time.time() - 100, time.time() - 100))  # still the oldest
        ensure_lora_on_pod("204", files["204"][1], CountingFetch(files["204"][0], 0), tmp_path, BUDGET)
        present = sorted(p.stem for p in tmp_path.glob("*.safetensors"))
    assert present == ["201", "203", "204"]  # 202 was the least recently used file not in use


def test_url_fetch_and_id_validation(tmp_path, faces_dir):
    from gpu_support import shared_sim, trained_lora

    sim = shared_sim(faces_dir)
    trained = trained_lora(faces_dir, "flux")
    path = ensure_lora_on_pod("url-fetch-1", trained.result.sha256, trained.result.download_url, tmp_path, 1 << 30)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == trained.result.sha256
    assert sim.url in trained.result.download_url
    with pytest.raises(InvalidIdError):
        ensure_lora_on_pod("../escape", trained.result.sha256, trained.result.download_url, tmp_path, 1 << 30)
