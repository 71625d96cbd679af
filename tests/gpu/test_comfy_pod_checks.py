"""Before queueing, the ComfyUI client checks that the pod can run the workflow: its ComfyUI version (from
`GET /system_stats`, shaped as ComfyUI's server.py answers), the node types and the model files; a refusal is
one line naming everything missing, and nothing is retried."""

from __future__ import annotations

import copy
import gzip
import json
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from lora_pipelines.gpu.comfyui import ComfyUIClient, PodNotReadyError, UnknownNodeTypeError
from lora_pipelines.gpu.errors import GpuPermanentError
from lora_pipelines.gpu.sim_launcher import free_port
from lora_pipelines.workflows import comfy_schema
from lora_pipelines.workflows.builders import build_workflow
from lora_pipelines.workflows.model_files import POD_MODEL_FILES
from lora_pipelines.workflows.pod_needs import named_workflow_needs, pod_needs, version_tuple
from sim_gpu.server import SimGpuServer

# The keys ComfyUI's server.py puts in /system_stats (Comfy-Org/ComfyUI a125cd84, `system_stats()`).
SYSTEM_KEYS = {"os", "ram_total", "ram_free", "comfyui_version", "required_frontend_version",
               "installed_templates_version", "required_templates_version", "python_version", "pytorch_version",
               "embedded_python", "argv"}
DEVICE_KEYS = {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"}


def z_image() -> dict:
    return build_workflow("z-image-danrisi", "a portrait", seed=3, steps=4, width=256, height=256)


def flux_pulid() -> dict:
    return build_workflow("flux-pulid", "a portrait", seed=3, steps=4, width=256, height=256,
                          reference_image="reference.png")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    server = SimGpuServer(tmp_path_factory.mktemp("sim_home")).start()
    try:
        yield server
    finally:
        server.stop()


class Pod:
    """A stand-in ComfyUI server over real HTTP: /system_stats, /object_info (core nodes, optionally PuLID's) with
    the model files it holds, /models/loras and /prompt; counts requests per path."""

    def __init__(self, *, version: str | None, pulid: bool, files: dict[str, list[str]], stats: bool = True) -> None:
        self.version, self.pulid, self.files = version, pulid, files
        self.requests: dict[str, int] = {}
        app = FastAPI()

        def count(path: str) -> None:
            self.requests[path] = self.requests.get(path, 0) + 1

        @app.get("/system_stats")
        def system_stats():
            count("/system_stats")
            if not stats:
                return JSONResponse({}, status_code=404)
            system = {"os": "posix", "python_version": "3.12", "comfyui_version": self.version}
            return {"system": {k: v for k, v in system.items() if v is not None}, "devices": []}

        @app.get("/object_info")
        def object_info():
            count("/object_info")
            info = comfy_schema.load_object_info()
            if not self.pulid:
                info = {k: v for k, v in info.items() if not v["python_module"].startswith("custom_nodes.")}
            return comfy_schema.with_available_files(info, self.files)

        @app.get("/models/loras")
        def loras():
            count("/models/loras")
            return []

        @app.post("/prompt")
        def prompt():
            count("/prompt")
            return {"prompt_id": "p1", "number": 0, "node_errors": {}}

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Pod:
        self._thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/models/loras", timeout=1)
                self.requests.clear()
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("stand-in pod did not start")

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


# ---------------------------------------------------------------- what each workflow needs

def test_each_named_workflow_says_what_its_pod_needs():
    needs = named_workflow_needs()
    assert set(needs) == {"z-image-danrisi", "flux-pulid", "qwen-image"}
    z = needs["z-image-danrisi"]
    assert (z.min_comfyui_version, z.base_model, z.node_packs) == ("0.3.75", "z-image-turbo", ())
    assert [str(f) for f in z.model_files] == ["diffusion_models/z_image_turbo_bf16.safetensors",
                                              "text_encoders/qwen_3_4b.safetensors", "vae/ae.safetensors"]
    flux = needs["flux-pulid"]
    assert flux.min_comfyui_version == "0.3.64" and flux.base_model == "flux"
    assert [p.repository for p in flux.node_packs] == ["lldacing/ComfyUI_PuLID_Flux_ll"]
    assert "pulid/pulid_flux_v0.9.1.safetensors" in [str(f) for f in flux.model_files]
    assert {"ApplyPulidFlux", "PulidFluxModelLoader", "LoadImage"} <= set(flux.node_types)
    for need in needs.values():  # every file a built workflow names is one the pod layout lists
        assert all(f.name in POD_MODEL_FILES[f.folder] for f in need.model_files)
    assert version_tuple("v0.3.75-rc1") == (0, 3, 75) < version_tuple("0.4.0") and version_tuple("0.10.1") > (0, 9)
    with pytest.raises(ValueError):
        version_tuple("unknown")


# ---------------------------------------------------------------- the simulated pod

def test_the_simulated_pod_reports_its_version_like_comfyui(sim):
    body = httpx.get(f"{sim.url}/system_stats", timeout=10).json()
    assert set(body) == {"system", "devices"}
    assert set(body["system"]) == SYSTEM_KEYS and set(body["devices"][0]) == DEVICE_KEYS
    assert body["system"]["comfyui_version"] == "0.3.75"
    client = ComfyUIClient(sim.url)
    assert client.comfyui_version() == "0.3.75"
    assert client.check_pod(z_image()).min_comfyui_version == "0.3.75"


def test_an_old_pod_refuses_z_image_in_one_line_before_queueing(sim):
    sim.config.comfyui_version = "0.3.64"
    try:
        client = ComfyUIClient(sim.url)
        with pytest.raises(PodNotReadyError) as refused:
            client.preflight(z_image())
        client.preflight(flux_pulid())  # Flux needs nothing newer than the baseline schema
    finally:
        sim.config.comfyui_version = "0.3.75"
    message = str(refused.value)
    assert "\n" not in message and "ComfyUI is 0.3.64" in message and ">= 0.3.75" in message
    assert isinstance(refused.value, GpuPermanentError) and refused.value.endpoint == "/system_stats"


# ---------------------------------------------------------------- a pod missing things

def test_missing_pulid_pack_and_model_files_are_named_together():
    files = {**POD_MODEL_FILES, "diffusion_models": ["z_image_turbo_bf16.safetensors"]}
    with Pod(version="0.3.76", pulid=False, files=files) as pod:
        with pytest.raises(UnknownNodeTypeError) as refused:
            ComfyUIClient(pod.url).run(flux_pulid(), timeout_s=5)
        requests = dict(pod.requests)
    message = str(refused.value)
    assert message.startswith("comfyui /object_info: the pod cannot run this workflow: ") and "\n" not in message
    assert ("node types not installed: ApplyPulidFlux, PulidFluxEvaClipLoader, PulidFluxInsightFaceLoader, "
            "PulidFluxModelLoader (node pack lldacing/ComfyUI_PuLID_Flux_ll)") in message
    assert "model files missing: diffusion_models/flux1-dev.safetensors" in message
    assert "ComfyUI is" not in message, "0.3.76 is new enough"
    # Not retried: one version check, the cached node list fetched again once before refusing, nothing queued.
    assert requests == {"/system_stats": 1, "/object_info": 2}


def test_a_model_file_added_after_the_first_look_is_found():
    files = {**POD_MODEL_FILES, "vae": []}
    with Pod(version="0.3.75", pulid=True, files=files) as pod:
        client = ComfyUIClient(pod.url)
        with pytest.raises(PodNotReadyError, match=r"model files missing: vae/ae.safetensors$"):
            client.check_pod(z_image())
        pod.files = {**POD_MODEL_FILES}
        assert client.check_pod(z_image()).base_model == "z-image-turbo"


@pytest.mark.parametrize("stats", [True, False], ids=["no version field", "no /system_stats route"])
def test_a_pod_that_does_not_say_its_version_is_refused(stats):
    with Pod(version=None, pulid=True, files=copy.deepcopy(POD_MODEL_FILES), stats=stats) as pod:
        with pytest.raises(PodNotReadyError, match=r"does not report its ComfyUI version.*>= 0\.3\.75"):
            ComfyUIClient(pod.url).check_pod(z_image())
        assert pod.requests.get("/prompt") is None and pod.requests["/system_stats"] == 1


def test_a_users_template_is_checked_by_what_it_loads():
    template = z_image()
    template["99"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x_foolhardy_Remacri.pth"}}
    needs = pod_needs(template)
    assert "upscale_models/4x_foolhardy_Remacri.pth" in [str(f) for f in needs.model_files]
    with Pod(version="0.3.80", pulid=True, files=copy.deepcopy(POD_MODEL_FILES)) as pod:
        with pytest.raises(PodNotReadyError, match="upscale_models/4x_foolhardy_Remacri.pth"):
            ComfyUIClient(pod.url).check_pod(template)


def test_packaged_pulid_schema_is_lldacings_pack():
    from importlib import resources

    schema = resources.files("lora_pipelines.workflows").joinpath("schema")
    raw = schema.joinpath("object_info_pulid_flux_ll.json.gz").read_bytes()
    nodes = json.loads(gzip.decompress(raw))
    assert set(nodes) == {"PulidFluxModelLoader", "PulidFluxInsightFaceLoader", "PulidFluxEvaClipLoader",
                          "ApplyPulidFlux", "FixPulidFluxPatch", "PulidFluxOptions", "PulidFluxFaceDetector"}
    assert nodes["ApplyPulidFlux"]["input"]["optional"] == {"attn_mask": ["MASK"], "options": ["OPTIONS"]}
