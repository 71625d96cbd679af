"""ComfyUI API-format workflows: builders, LoRA insertion, validation against the real node schema."""
