"""The simulated GPU service: a separate HTTP app speaking the Modal training and generation routes and the
ComfyUI subset, with faults on request. Run it with `python -m sim_gpu` or `lora-pipelines sim-gpu serve`.

It shares only `lora_pipelines.gpu.schemas`, `lora_pipelines.domain` and `lora_pipelines.workflows` with the
orchestrator, which starts it as a process (lora_pipelines.gpu.sim_launcher).
"""
