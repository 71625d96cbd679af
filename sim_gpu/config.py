"""What a simulated GPU service is started with: its home folder, readable roots, auth, timings, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim_gpu.faults import FaultConfig

FAULTS_ENV = "LORA_PIPELINES_SIM_FAULTS"
# What /system_stats reports. The node schema served is v0.3.64's (plus PuLID-Flux ll); the nodes Z-Image uses did
# not change up to v0.3.75, the first release that loads Z-Image, so the simulated pod reports that release.
SIM_COMFYUI_VERSION = "0.3.75"


@dataclass
class SimConfig:
    home: Path
    allowed_roots: list[Path] = field(default_factory=list)
    modal_key: str | None = None
    modal_secret: str | None = None
    training_seconds: float = 1.5
    step_ms: float = 10.0  # simulated sampling time per step, for generation and ComfyUI prompts
    faults: FaultConfig = field(default_factory=FaultConfig)
    comfyui_version: str = SIM_COMFYUI_VERSION

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.allowed_roots = [Path(r).resolve() for r in (self.allowed_roots or [])] + [self.home]

    @property
    def loras_dir(self) -> Path:
        return self.home / "models" / "loras"


def load_faults(text: str | None) -> FaultConfig:
    """Faults from JSON text, or from the file it names; empty → none."""
    if not text:
        return FaultConfig()
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text()
    return FaultConfig.model_validate_json(text)
