"""One process at a time on this host for a named piece of work: an flock under LORA_PIPELINES_HOME/locks.

For work that is correct when repeated but wasteful (the face analysis of a photo set that several runs need):
a process that cannot get the lock in time goes ahead without it."""

from __future__ import annotations

import contextlib
import fcntl
import re
import time
from collections.abc import Iterator
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@contextlib.contextmanager
def host_lock(home: Path, name: str, *, timeout_s: float = 600.0, poll_s: float = 0.1) -> Iterator[bool]:
    """Hold the lock `name` (yields True), or yield False after waiting `timeout_s` for it."""
    folder = Path(home) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{_UNSAFE.sub('_', name)[:200]}.lock").open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(poll_s)
                continue
            yield True  # closing the file releases the lock
            return
