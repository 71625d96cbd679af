"""TrainingSpec → ai-toolkit (ostris) job config, one profile per base model.

Values come from ai-toolkit's `config/examples/` at the pinned commit (see training.py). Lines marked
UNVERIFIED were not run on a GPU here; they follow the examples but were adapted for an 80 GB card.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lora_pipelines.gpu.schemas import TrainingSpec

# Per base model: the `model:` block, extra `train:` keys, extra `datasets[0]` keys, sampling guidance.
MODEL_PROFILES: dict[str, dict[str, Any]] = {
    "flux": {
        "model": {"name_or_path": "black-forest-labs/FLUX.1-dev", "is_flux": True, "quantize": True},
        "train": {},
        "dataset": {"resolution": [512, 768, 1024]},
    },
    "z-image-turbo": {
        "model": {
            "name_or_path": "Tongyi-MAI/Z-Image-Turbo",
            "arch": "zimage",
            # The de-distillation adapter keeps Turbo's few-step quality while training. ai-toolkit's
            # example at the pinned commit names v2; UNVERIFIED whether v1 is still preferred for people.
            "assistant_lora_path": "ostris/zimage_turbo_training_adapter/zimage_turbo_training_adapter_v2.safetensors",
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
            # UNVERIFIED: the example trains on "Qwen/Qwen-Image"; 2512 is the checkpoint the generation
            # endpoint serves (same architecture), so train on it.
            "name_or_path": "Qwen/Qwen-Image-2512",
            "arch": "qwen_image",
            "quantize": True,
            # 80 GB is enough for float8; the example's uint3 + accuracy-recovery adapter is for 24 GB cards.
            "qtype": "qfloat8",
            "quantize_te": True,
            "qtype_te": "qfloat8",
        },
        # No cache_text_embeddings: with cached embeddings ai-toolkit cannot insert the trigger word.
        "train": {},
        "dataset": {"resolution": [512, 768, 1024]},
    },
    "one-2.1": {
        "model": {"name_or_path": "Wan-AI/Wan2.1-T2V-14B-Diffusers", "arch": "wan21", "quantize": True,
                  "quantize_te": True},
        "train": {"timestep_type": "sigmoid"},
        "dataset": {"num_frames": 1, "resolution": [512, 768, 1024]},
    },
    "one-2.2": {
        "model": {
            "name_or_path": "ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16",
            "arch": "wan22_14b",
            "quantize": True,
            "qtype": "qfloat8",  # UNVERIFIED on 80 GB; the 24 GB example uses uint4 + an accuracy-recovery adapter
            "quantize_te": True,
            "qtype_te": "qfloat8",
            "model_kwargs": {"train_high_noise": True, "train_low_noise": True},
        },
        # Wan 2.2 is a mixture of two experts; the trainer alternates between them every N steps.
        "train": {"timestep_type": "linear", "switch_boundary_every": 10},
        "dataset": {"num_frames": 1, "resolution": [512, 768, 1024]},
    },
}


def job_name(spec: TrainingSpec) -> str:
    """ai-toolkit names the output folder and file after the job: `{training_folder}/{name}/{name}.safetensors`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", spec.lora_model_id)


def build_trainer_config(spec: TrainingSpec, *, dataset_dir: Path, output_dir: Path) -> dict[str, Any]:
    """The ai-toolkit job for `spec`: one `sd_trainer` process, sampling off, one save at the last step."""
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
        "save": {"dtype": "float16", "save_every": spec.steps, "max_step_saves_to_keep": 1},
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


def config_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def find_trained_lora(output_dir: Path, name: str) -> Path:
    """The final LoRA ai-toolkit wrote: `{name}.safetensors`, else the newest .safetensors in the job folder.

    UNVERIFIED for Wan 2.2 with both experts trained: if ai-toolkit writes one file per expert, the newest
    one is published and the other stays in the job folder on the volume.
    """
    folder = output_dir / name
    final = folder / f"{name}.safetensors"
    if final.is_file():
        return final
    candidates = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"the trainer wrote no .safetensors under {folder}")
    return candidates[-1]


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
