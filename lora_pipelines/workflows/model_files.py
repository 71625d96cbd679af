"""Model files a ComfyUI pod holds, by ComfyUI models/ folder, and which base model each diffusion model is.

The workflow builders reference exactly these names; the simulated pod lists them, so combo inputs validate.
"""

POD_MODEL_FILES: dict[str, list[str]] = {
    "diffusion_models": [
        "z_image_turbo_bf16.safetensors",
        "flux1-dev.safetensors",
        "qwen_image_fp8_e4m3fn.safetensors",
        "wan2.1_t2v_14B_fp16.safetensors",
        "wan2.2_t2v_14B_fp16.safetensors",
    ],
    "text_encoders": [
        "qwen_3_4b.safetensors",
        "clip_l.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors",
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    ],
    "vae": ["ae.safetensors", "qwen_image_vae.safetensors", "wan_2.1_vae.safetensors"],
    "pulid": ["pulid_flux_v0.9.1.safetensors"],
}

# diffusion model file -> base model family it runs
UNET_BASE_MODEL: dict[str, str] = {
    "z_image_turbo_bf16.safetensors": "z-image-turbo",
    "flux1-dev.safetensors": "flux",
    "qwen_image_fp8_e4m3fn.safetensors": "qwen-image",
    "wan2.1_t2v_14B_fp16.safetensors": "one-2.1",
    "wan2.2_t2v_14B_fp16.safetensors": "one-2.2",
}

# Where an operator gets each file the named workflows load (models/<folder>/<file> on the pod). Read in:
# ComfyUI's official templates (comfyui-workflow-templates-json 0.1.123: image_z_image_turbo, image_qwen_image,
# node properties "models") and lldacing/ComfyUI_PuLID_Flux_ll's README (Flux and PuLID files).
MODEL_FILE_SOURCES: dict[str, str] = {
    "z_image_turbo_bf16.safetensors":
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
    "qwen_3_4b.safetensors":
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
    # the FLUX.1 autoencoder, which Z-Image uses too
    "ae.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors",
    "flux1-dev.safetensors": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/flux1-dev.safetensors",
    "clip_l.safetensors": "https://huggingface.co/comfyanonymous/flux_text_encoders/blob/main/clip_l.safetensors",
    "t5xxl_fp8_e4m3fn.safetensors":
        "https://huggingface.co/comfyanonymous/flux_text_encoders/blob/main/t5xxl_fp8_e4m3fn.safetensors",
    "pulid_flux_v0.9.1.safetensors": "https://huggingface.co/guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors",
    "qwen_image_fp8_e4m3fn.safetensors":
        "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
    "qwen_2.5_vl_7b_fp8_scaled.safetensors":
        "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
    "qwen_image_vae.safetensors":
        "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors",
}
