"""The simulated service as a whole: one schema with gpu/schemas.py, started on demand and reused, wired by
the factory, and its CLI."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from conftest import REPO_ROOT, wait_for
from gpu_support import shared_sim
from lora_pipelines.gpu import schemas
from lora_pipelines.gpu.factory import GpuConfigError, build_gpu_services
from lora_pipelines.gpu.sim_launcher import STATE_FILE, ensure_sim_gpu_running, sim_home
from lora_pipelines.settings import Settings

MODAL_ROUTE_MODELS = {
    ("/functions/{app_name}/{function}/spawn", "post"): (schemas.TrainingSpec, schemas.SpawnResponse),
    ("/function-calls/{call_id}", "get"): (None, schemas.TrainingPoll),
    ("/flux-lora", "post"): (schemas.GenerateRequest, schemas.GenerateResponse),
    ("/qwen-image-2512-lora", "post"): (schemas.GenerateRequest, schemas.GenerateResponse),
    ("/standard", "post"): (schemas.GenerateRequest, schemas.GenerateResponse),
    ("/face-swap", "post"): (schemas.FaceSwapRequest, schemas.GenerateResponse),
}


def _resolve(schema, components: dict, drop_null_defaults: bool = False):
    """The schema with every $ref inlined, so the served and the pydantic form compare structurally.
    FastAPI renders numeric bounds as floats and leaves `"default": null` out; both are normalised here."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _resolve(components[schema["$ref"].rsplit("/", 1)[1]], components, drop_null_defaults)
        return {k: _resolve(v, components, drop_null_defaults) for k, v in schema.items()
                if k != "$defs" and not (drop_null_defaults and k == "default" and v is None)}
    if isinstance(schema, list):
        return [_resolve(v, components, drop_null_defaults) for v in schema]
    if isinstance(schema, (int, float)) and not isinstance(schema, bool):
        return float(schema)
    return schema


def _pydantic(model, mode: str, drop_null_defaults: bool = False) -> dict:
    mine = model.model_json_schema(mode=mode, ref_template="#/$defs/{model}")
    return _resolve(mine, mine.get("$defs", {}), drop_null_defaults)


def test_openapi_of_the_modal_routes_is_the_shared_pydantic_schema(faces_dir):
    spec = httpx.get(f"{shared_sim(faces_dir).url}/openapi.json").json()
    served = spec["components"]["schemas"]
    for (path, method), (request_model, response_model) in MODAL_ROUTE_MODELS.items():
        operation = spec["paths"][path][method]
        if request_model is not None:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert _resolve(body, served, True) == _pydantic(request_model, "validation", True), path
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert _resolve(answer, served, True) == _pydantic(response_model, "serialization", True), path


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reap it once it exited
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_on_demand_service_is_started_once_reused_and_stops_itself(tmp_path):
    home = tmp_path / "home"
    url = ensure_sim_gpu_running(home, idle_exit_s=3)
    pid = json.loads((sim_home(home) / STATE_FILE).read_text())["pid"]
    try:
        assert ensure_sim_gpu_running(home) == url
        health = httpx.get(f"{url}/health").json()
        assert health["backend"] == "simulated" and health["pid"] == pid
        shutil.rmtree(home)  # an on-demand service outliving its home stops by itself
        wait_for(lambda: not _alive(pid), 5, "the orphaned service to stop", interval_s=0.1)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)


def test_factory_wires_all_three_to_the_simulated_service(faces_dir, tmp_path):
    sim = shared_sim(faces_dir)
    services = build_gpu_services(Settings(home=tmp_path, gpu_backend="simulated", sim_gpu_url=sim.url))
    assert services.backend_name == "simulated" and services.training.name == "simulated"
    assert services.loras_root == sim.loras_dir
    assert services.comfyui.list_loras() == sorted(p.name for p in sim.loras_dir.glob("*.safetensors"))
    assert services.training.poll("fc-none").state == "lost"


def test_factory_refuses_incomplete_production_settings(tmp_path):
    with pytest.raises(GpuConfigError, match="LORA_PIPELINES_COMFYUI_URL"):
        build_gpu_services(Settings(home=tmp_path, gpu_backend="comfyui"))
    with pytest.raises(GpuConfigError, match="MODAL_KEY"):
        build_gpu_services(Settings(home=tmp_path, gpu_backend="modal", modal_endpoint_url="https://ws--{route}.modal.run"))
    services = build_gpu_services(Settings(home=tmp_path, gpu_backend="modal", modal_key="k-123456",
                                           modal_secret="s-123456", modal_endpoint_url="https://ws--{route}.modal.run"))
    assert (services.backend_name, services.training.name, services.comfyui) == ("modal", "modal", None)


def test_sim_gpu_shares_only_schemas_domain_and_workflows_with_the_orchestrator():
    root = REPO_ROOT / "sim_gpu"
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            imported.update((path.relative_to(root).as_posix(), n) for n in names if n.startswith("lora_pipelines"))
    assert imported, "sim_gpu no longer imports the shared schemas?"
    allowed = ("lora_pipelines.gpu.schemas", "lora_pipelines.domain.", "lora_pipelines.workflows.")
    assert [(f, n) for f, n in sorted(imported) if not n.startswith(allowed)] == []


def test_importing_the_gpu_clients_and_cli_loads_no_service_code():
    code = ("import sys, lora_pipelines.cli, lora_pipelines.gpu.factory, lora_pipelines.gpu.sim_launcher; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sim_gpu', 'fastapi', 'uvicorn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_serve_help_lists_the_options():
    from lora_pipelines.cli import main

    result = CliRunner().invoke(main, ["sim-gpu", "serve", "--help"])
    assert result.exit_code == 0
    assert "--faults" in result.output and "--port" in result.output and "--home" in result.output
