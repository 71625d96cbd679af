"""TrainingSpec → ai-toolkit (ostris) job config, one profile per base model.

Values come from ai-toolkit at the pinned commit (modal_apps/pins.py): its `config/examples/*.yaml`, the
per-model defaults of its UI (`ui/src/app/jobs/new/options.ts`) and `toolkit/config_modules.py`. None was run
on a GPU here; memory on an 80 GB card (float8 instead of the 24 GB examples' 3/4-bit) is not measured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.checkpoints import save_every
from lora_pipelines.gpu.schemas import TrainingSpec
from modal_apps import pins

# Per base model: the `model:` block, extra `train:` keys, extra `datasets[0]` keys, sampling guidance.
MODEL_PROFILES: dict[str, dict[str, Any]] = {
    "flux": {
        "model": {"name_or_path": pins.FLUX_DEV_REPO, "is_flux": True, "quantize": True},
        "train": {},
        "dataset": {"resolution": [512, 768, 1024]},
    },
    "z-image-turbo": {
        "model": {
            "name_or_path": pins.Z_IMAGE_TURBO_REPO,
            "arch": "zimage",
            # The de-distillation adapter keeps Turbo's few-step quality while training; v2 is the UI's
            # "Z-Image Turbo (w/ Training Adapter)" default at the pinned commit.
            "assistant_lora_path": pins.Z_IMAGE_TRAINING_ADAPTER,
            "quantize": True,
            "qtype": "qfloat8",
            "quantize_te": True,
            "qtype_te": "qfloat8",
        },
        "train": {"timestep_type": "weighted"},
        "dataset": {"resolution": [512, 768, 1024]},
    },
    "qwen-image": {
        "model": {
            # The UI's "Qwen-Image-2512" entry (arch qwen_image): the checkpoint the generation endpoint serves.
            "name_or_path": pins.QWEN_IMAGE_2512_REPO,
            "arch": "qwen_image",
            "quantize": True,
            # 80 GB is enough for float8; the example's uint3 + accuracy-recovery adapter is for 24 GB cards.
            "qtype": "qfloat8",
            "quantize_te": True,
            "qtype_te": "qfloat8",
        },
        # No cache_text_embeddings: with cached embeddings ai-toolkit cannot insert the trigger word.
        "train": {"timestep_type": "weighted"},
        "dataset": {"resolution": [512, 768, 1024]},
    },
    "one-2.1": {
        "model": {"name_or_path": pins.WAN21_T2V_14B_REPO, "arch": "wan21", "quantize": True, "quantize_te": True},
        "train": {"timestep_type": "sigmoid"},
        "dataset": {"num_frames": 1, "resolution": [512, 768, 1024]},
    },
    "one-2.2": {
        "model": {
            "name_or_path": pins.WAN22_TRAINING_REPO,
            "arch": "wan22_14b",
            "quantize": True,
            # ai-toolkit's default qtype; the 24 GB example uses uint4 + an accuracy-recovery adapter
            "qtype": "qfloat8",
            "quantize_te": True,
            "qtype_te": "qfloat8",
            "model_kwargs": {"train_high_noise": True, "train_low_noise": True},
        },
        # Wan 2.2 is a mixture of two experts; the trainer alternates between them every N steps and, with
        # network.split_multistage_loras (default True), saves one file per expert (find_trained_loras).
        "train": {"timestep_type": "linear", "switch_boundary_every": 10},
        "dataset": {"num_frames": 1, "resolution": [512, 768, 1024]},
    },
}


def job_name(spec: TrainingSpec) -> str:
    """ai-toolkit names the output folder and file after the job: `{training_folder}/{name}/{name}.safetensors`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", spec.lora_model_id)


def build_trainer_config(spec: TrainingSpec, *, dataset_dir: Path, output_dir: Path) -> dict[str, Any]:
    """The ai-toolkit job for `spec`: one `sd_trainer` process, sampling off, `spec.checkpoints` saves (every
    ceil(steps / checkpoints) steps plus the final file; one save, the final, for a two-expert LoRA)."""
    profile = MODEL_PROFILES.get(spec.base_model)
    if profile is None:
        raise ValueError(
            f"no ai-toolkit profile for base model {spec.base_model!r}; known: {', '.join(MODEL_PROFILES)}")
    dataset = {
        "folder_path": str(dataset_dir),
        "caption_ext": "txt",
        "caption_dropout_rate": 0.05,
        "shuffle_tokens": False,
        "cache_latents_to_disk": True,
        **profile["dataset"],
    }
    train = {
        "batch_size": 1,
        "steps": spec.steps,
        "gradient_accumulation": 1,
        "train_unet": True,
        "train_text_encoder": False,
        "gradient_checkpointing": True,
        "noise_scheduler": "flowmatch",
        "optimizer": "adamw8bit",
        "lr": spec.learning_rate,
        "dtype": "bf16",
        "disable_sampling": True,
        "skip_first_sample": True,
        **profile["train"],
    }
    process = {
        "type": "sd_trainer",
        "training_folder": str(output_dir),
        "device": "cuda:0",
        # ai-toolkit adds the trigger word to captions that lack it and replaces "[trigger]".
        "trigger_word": spec.trigger_word,
        "network": {"type": "lora", "linear": spec.rank, "linear_alpha": spec.rank},
        # ai-toolkit saves `{name}_{step:09d}` at every multiple of save_every below `steps` (jobs/process/
        # BaseSDTrainProcess.py: is_save_step) and `{name}` at the end; clean_up_saves keeps the newest
        # max_step_saves_to_keep step saves. save_every = steps: the final file only.
        "save": {"dtype": "float16", "save_every": save_every(spec.steps, _checkpoints(spec)),
                 "max_step_saves_to_keep": _checkpoints(spec)},
        "datasets": [dataset],
        "train": train,
        "model": dict(profile["model"]),
    }
    return {
        "job": "extension",
        "config": {"name": job_name(spec), "process": [process]},
        "meta": {
            "name": "[name]",
            "version": "1.0",
            "lora_model_id": spec.lora_model_id,
            "character_id": spec.character_id,
            "base_model": spec.base_model,
        },
    }


def _checkpoints(spec: TrainingSpec) -> int:
    """Checkpoints of a single-file LoRA; a two-expert one keeps its final pair only."""
    return 1 if lora_experts(spec.base_model) else spec.checkpoints


def find_step_saves(output_dir: Path, name: str) -> list[tuple[int, Path]]:
    """ai-toolkit's step saves of a single-file LoRA, `{name}_{step:09d}.safetensors`, oldest first."""
    folder = output_dir / name
    pattern = re.compile(rf"^{re.escape(name)}_(\d{{9}})\.safetensors$")
    found = [(int(m.group(1)), p) for p in (folder.glob("*.safetensors") if folder.is_dir() else [])
             if (m := pattern.match(p.name))]
    return sorted(found)


def config_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def find_trained_lora(output_dir: Path, name: str) -> Path:
    """The final LoRA ai-toolkit wrote: `{name}.safetensors`, else the newest step save in the job folder."""
    folder = output_dir / name
    final = folder / f"{name}.safetensors"
    if final.is_file():
        return final
    candidates = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"the trainer wrote no .safetensors under {folder}")
    return candidates[-1]


def find_trained_expert(output_dir: Path, name: str, expert: str) -> Path:
    """One expert's file of a two-expert LoRA: ai-toolkit saves `{name}_{expert}.safetensors` at the end and
    `{name}_{step:09d}_{expert}.safetensors` at step saves (Wan 2.2 14B, wan22_14b_model.py `save_lora`)."""
    folder = output_dir / name
    final = folder / f"{name}_{expert}.safetensors"
    if final.is_file():
        return final
    pattern = re.compile(rf"^{re.escape(name)}_\d{{9}}_{re.escape(expert)}\.safetensors$")
    found = folder.glob(f"*_{expert}.safetensors") if folder.is_dir() else []
    steps = sorted(p for p in found if pattern.match(p.name))
    if not steps:
        raise FileNotFoundError(f"the trainer wrote no {expert} expert ({name}_{expert}.safetensors) under {folder}; "
                                "a two-expert LoRA needs both files")
    return steps[-1]


def find_trained_loras(output_dir: Path, name: str, base_model: str) -> list[tuple[str | None, Path]]:
    """Every file of the trained LoRA as (expert, path): one (None, path) for a single-file LoRA; one per
    expert, primary first, for a two-expert base model (Wan 2.2 14B: high_noise, low_noise)."""
    experts = lora_experts(base_model)
    if not experts:
        return [(None, find_trained_lora(output_dir, name))]
    return [(expert, find_trained_expert(output_dir, name, expert)) for expert in experts]


_STEP = re.compile(r"(\d+)/(\d+)\s*\[")


def parse_progress(line: str, name: str) -> tuple[int, int] | None:
    """(step, total) from an ai-toolkit tqdm line such as `job:  10%|#  | 100/1000 [01:23<...]`.

    Only lines starting with the job name count: model downloads and shard loading print tqdm bars too.
    """
    stripped = line.strip()
    if not stripped.startswith(f"{name}:"):
        return None
    match = _STEP.search(stripped)
    if not match:
        return None
    step, total = int(match.group(1)), int(match.group(2))
    return (step, total) if total > 0 else None
