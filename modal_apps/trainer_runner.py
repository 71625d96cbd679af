"""The real TrainerRunner: ai-toolkit's `run.py` in a subprocess, progress parsed from its output."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modal_apps.trainer_config import config_yaml, parse_progress


class TrainerError(RuntimeError):
    pass


class AiToolkitRunner:
    def __init__(self, toolkit_dir: Path, python: str = sys.executable) -> None:
        self.toolkit_dir = toolkit_dir
        self.python = python

    def run(self, config: dict[str, Any], *, work_dir: Path, on_step: Callable[[int, int], None]) -> None:
        """Run the job to the end; the trained files stay in `{training_folder}/{name}/` (find_trained_loras)."""
        name = config["config"]["name"]
        config_path = work_dir / "ai_toolkit_job.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config_yaml(config))
        tail: collections.deque[str] = collections.deque(maxlen=40)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DISABLE_TELEMETRY": "YES"}
        process = subprocess.Popen(
            [self.python, "run.py", str(config_path)],
            cwd=self.toolkit_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        buffer = b""
        # tqdm redraws with '\r', so split on both line ends to see every step.
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            buffer += chunk
            *lines, buffer = buffer.replace(b"\r", b"\n").split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if not line.strip():
                    continue
                step = parse_progress(line, name)
                if step:
                    on_step(*step)
                else:
                    print(line, flush=True)
                    tail.append(line)
        code = process.wait()
        if code != 0:
            raise TrainerError(f"ai-toolkit exited with code {code}; last output:\n" + "\n".join(tail))
