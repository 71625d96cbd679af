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
