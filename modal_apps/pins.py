"""Every commit, version and model repository the Modal images use. Each one was read in its real source;
docs/modal.md says where (repository, commit, file) and what could not be run here.

Plain constants, no imports: `training.py` and `generation.py` build their images from these at deploy time.
"""

from __future__ import annotations

# ostris/ai-toolkit at the "Version bump" commit of 0.11.2 (2026-07-25): the last release before the
# installer rework of 2026-07-27 moved torch to 2.13 / CUDA 13.0. It has the Z-Image (`zimage`), Qwen-Image
# (`qwen_image`), Wan 2.1 (`wan21`) and Wan 2.2 14B (`wan22_14b`) trainers, and imports torchaudio at start-up.
AI_TOOLKIT_REPO = "https://github.com/ostris/ai-toolkit.git"
AI_TOOLKIT_COMMIT = "0e1784176708e351ae664002a53baa585b5949fb"
AI_TOOLKIT_PYTHON = "3.12"  # its README: "python >=3.10 (3.12 recommended)"; its Dockerfile installs python3.12

# The triple ai-toolkit's README (and docker/Dockerfile) installs at that commit, before requirements.txt.
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cu128"
TORCH_PACKAGES = ("torch==2.9.1", "torchvision==0.24.1", "torchaudio==2.9.1")
# What its docker/Dockerfile apt-installs that requirements.txt needs (git+https diffusers, compiled wheels, av).
AI_TOOLKIT_APT = ("git", "build-essential", "cmake", "ffmpeg", "libgl1", "libglib2.0-0")
GENERATION_TORCH_PACKAGES = TORCH_PACKAGES[:2]  # the same torch build; torchaudio is only ai-toolkit's

# The generation image: the releases ai-toolkit's requirements pin at that commit (transformers, peft,
# huggingface_hub) and the first diffusers release that contains the diffusers commit it installs
# (c9438378, 2026-05-29 -> v0.39.0, 2026-07-03). diffusers 0.39.0 has FluxPipeline, QwenImagePipeline,
# ZImagePipeline and WanPipeline (transformer + transformer_2, load_lora_weights(load_into_transformer_2=True)).
GENERATION_PYTHON = "3.11"
GENERATION_ML_PACKAGES = (
    "diffusers==0.39.0",
    "transformers==5.5.3",
    "accelerate==1.13.0",
    "peft==0.18.1",
    "huggingface_hub==1.23.0",
    "safetensors==0.8.0",
    "sentencepiece==0.2.1",
    "protobuf==6.33.5",
)
# Face swap: insightface 2.1 is a pure-Python wheel (0.7.3 is an sdist that needs a C++ compiler) and still
# has FaceAnalysis(name, providers).prepare(ctx_id, det_size) and model_zoo.get_model("x.onnx") -> INSwapper.
# It is installed without its dependencies because it requires the CPU `onnxruntime`, which shares the
# `onnxruntime` module with onnxruntime-gpu; 1.23.2 is a CUDA 12 build (capi/build_and_package_info.py).
FACE_SWAP_PACKAGES = ("onnxruntime-gpu==1.23.2", "onnx==1.20.1", "opencv-python-headless==4.13.0.92",
                      "scikit-image==0.26.0", "scipy==1.16.3", "tqdm", "requests")
INSIGHTFACE_PACKAGE = "insightface==2.1"

# Hugging Face repositories (model id -> where it was read).
FLUX_DEV_REPO = "black-forest-labs/FLUX.1-dev"
QWEN_IMAGE_2512_REPO = "Qwen/Qwen-Image-2512"
Z_IMAGE_TURBO_REPO = "Tongyi-MAI/Z-Image-Turbo"
Z_IMAGE_TRAINING_ADAPTER = "ostris/zimage_turbo_training_adapter/zimage_turbo_training_adapter_v2.safetensors"
WAN21_T2V_14B_REPO = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
WAN22_T2V_A14B_REPO = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"  # diffusers' Wan docs list it as "Wan 2.2 T2V 14B"
WAN22_TRAINING_REPO = "ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16"  # ai-toolkit's bf16 copy it trains on
# inswapper_128.onnx as ReActor's installer downloads it (Gourieff/ComfyUI-ReActor install.py):
# https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/inswapper_128.onnx
INSWAPPER_REPO = "Gourieff/ReActor"
INSWAPPER_REPO_TYPE = "dataset"
INSWAPPER_FILE = "models/inswapper_128.onnx"
