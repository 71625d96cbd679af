"""Hostile and bad input through the entry points a user hits: each case is a clear error naming what was wrong,
a pipeline drops or reports the case and processes the rest, nothing escapes its folder, nothing is lost."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import person_photos
from hostile.corpus import (
    HOSTILE_IDS,
    HOSTILE_NAMES,
    HOSTILE_PROMPTS,
    SQL_INJECTION_PROMPT,
    image_cases,
    oversized_file_case,
    safetensors_cases,
    write_images,
    write_safetensors,
)
from lora_pipelines.cli import main
from lora_pipelines.domain import keys
from lora_pipelines.domain.safetensors_inspect import InvalidLoraFileError, inspect_lora_file
from lora_pipelines.faces.dataset import build_training_dataset
from lora_pipelines.faces.images import ImageDecodeError, decode_image
from lora_pipelines.gpu.comfyui import ComfyUIClient
from lora_pipelines.gpu.errors import GpuBackendError
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.objects.local import LocalObjectStore

IMAGE_CASES = image_cases()
UNDECODABLE = [c for c in IMAGE_CASES if c.reason in {"corrupt_image", "too_large"}]
GOOD_PHOTOS = ("img44.jpg", "img45.jpg", "img46.jpg")  # three small photos of one person


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# --- images -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", UNDECODABLE + [oversized_file_case()], ids=lambda c: c.name)
def test_decode_image_refuses_and_names_the_problem(case):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(case.data, name=case.name)
    message = str(caught.value)
    assert message.startswith(f"{case.name}: ") and case.expect in message.lower()
    assert caught.value.reason == case.reason


def test_training_dataset_drops_every_bad_photo_and_keeps_the_good_ones(faces_dir, analyzer):
    good = [(p.name, p.read_bytes()) for p in person_photos(faces_dir, "katy_perry") if p.name in GOOD_PHOTOS]
    two_faces = ("two_faces.jpg", (faces_dir / "_edge" / "kit_with_rose.jpg").read_bytes())
    oversized = oversized_file_case(limit=1024 * 1024)
    bad = [(c.name, c.data) for c in [*IMAGE_CASES, oversized]] + [two_faces]

    dataset = build_training_dataset(
        good + bad, trigger_word="ohwx_katy", analyzer=analyzer, max_bytes=1024 * 1024, training_size=128)

    assert sorted(item.name for item in dataset.items) == sorted(GOOD_PHOTOS)
    dropped = {d.name: d for d in dataset.dropped}
    expected = {c.name: c for c in [*IMAGE_CASES, oversized]}
    assert set(dropped) == {*expected, "two_faces.jpg"}
    for name, case in expected.items():
        assert dropped[name].reason == case.reason, name
        assert case.expect in dropped[name].detail.lower() and name in dropped[name].detail
    assert dropped["two_faces.jpg"].reason == "multiple_faces"
    assert "2 faces" in dropped["two_faces.jpg"].detail
    assert {d["name"] for d in dataset.manifest["dropped"]} == set(dropped)  # the drops are recorded, not lost


def test_character_add_skips_each_unreadable_photo_by_name_and_stores_the_rest(faces_dir, tmp_path, lp_home):
    folder = tmp_path / "photos"
    write_images(folder, IMAGE_CASES)
    for name in GOOD_PHOTOS[:2]:
        (folder / name).write_bytes((faces_dir / "katy_perry" / name).read_bytes())

    result = CliRunner().invoke(main, ["character", "add", "--name", "Katy", "--photos", str(folder)])

    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == len(IMAGE_CASES)
    for case in UNDECODABLE:
        assert any(line.startswith(f"skipped: {case.name}: ") and case.expect in line.lower()
                   for line in skipped), case.name
    # decodable images without one clear face (icons, noise, blank, tiny) are skipped too, before anything is stored
    for case in (c for c in IMAGE_CASES if c not in UNDECODABLE):
        assert any(line.startswith(f"skipped: {case.name}: ") for line in skipped), case.name
    kept = 2
    assert f": {kept} photos" in result.stdout
    assert f"LoRA disabled: 2 usable photo(s) ({len(IMAGE_CASES)} skipped)" in result.stderr
    objects = lp_home / "objects"
    assert all(key.startswith("characters") for key in tree(objects))
    assert len([k for k in tree(objects) if k.count("/") == 3]) == kept


def test_character_add_with_no_usable_photo_is_refused_and_stores_nothing(tmp_path, lp_home):
    folder = tmp_path / "photos"
    write_images(folder, IMAGE_CASES)
    runner = CliRunner()

    result = runner.invoke(main, ["character", "add", "--name", "Nobody", "--photos", str(folder)])

    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: none of the {len(IMAGE_CASES)} photos is usable: ")
    assert all(case.name in result.stderr for case in IMAGE_CASES)
    assert "no face found" in result.stderr
    assert not lp_home.exists()  # refused before any home, database or store was made


def test_face_match_reports_each_bad_candidate_and_scores_the_rest(faces_dir, tmp_path):
    reference = tmp_path / "reference"
    write_images(reference, [c for c in IMAGE_CASES if c.name in {"truncated_jpeg.jpg", "faceless_landscape.jpg"}])
    (reference / "two_faces.jpg").write_bytes((faces_dir / "_edge" / "kit_with_rose.jpg").read_bytes())
    (reference / GOOD_PHOTOS[0]).write_bytes((faces_dir / "katy_perry" / GOOD_PHOTOS[0]).read_bytes())
    candidates = tmp_path / "candidates"
    write_images(candidates, IMAGE_CASES)
    (candidates / "katy.jpg").write_bytes((faces_dir / "katy_perry" / GOOD_PHOTOS[1]).read_bytes())

    result = CliRunner().invoke(main, ["face-match", "--reference", str(reference), "--candidates", str(candidates),
                                       "--json", "--workers", "1"])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["reference"]["used"] == [GOOD_PHOTOS[0]]
    assert {s["file"]: s["reason"] for s in doc["reference"]["skipped"]} == {
        "truncated_jpeg.jpg": "corrupt_image", "faceless_landscape.jpg": "no_face", "two_faces.jpg": "several_faces"}
    rows = {row["file"]: row for row in doc["candidates"]}
    assert set(rows) == {c.name for c in IMAGE_CASES} | {"katy.jpg"}
    for case in UNDECODABLE:
        assert "corrupt" in rows[case.name]["flags"] and not rows[case.name]["match"], case.name
    assert "no_face" in rows["faceless_landscape.jpg"]["flags"]
    assert rows["katy.jpg"]["match"] is True
    assert doc["summary"]["unreadable"] == len(UNDECODABLE)


# --- safetensors ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_loras(tmp_path_factory):
    return write_safetensors(tmp_path_factory.mktemp("safetensors"))


@pytest.mark.parametrize("name", [case.name for case in safetensors_cases()])
def test_bad_safetensors_are_refused_in_one_line_naming_the_problem(bad_loras, name):
    path, case = bad_loras[name]
    with pytest.raises(InvalidLoraFileError) as caught:
        inspect_lora_file(path)
    assert case.expect in str(caught.value).lower()

    result = CliRunner().invoke(main, ["inspect-lora", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and case.expect in lines[0].lower()


# --- ids, keys and the object store -----------------------------------------------------------------------

KEY_BUILDERS = {
    "lora_key.character": lambda v: keys.lora_key("flux", v, "job1"),
    "lora_key.job": lambda v: keys.lora_key("flux", "7", v),
    "lora_key.base_model": lambda v: keys.lora_key(v, "7", "job1"),
    "photo_key.filename": lambda v: keys.photo_key("7", v),
    "dataset_prefix.hash": lambda v: keys.dataset_prefix("flux", "7", v),
    "generation_output_key.job": lambda v: keys.generation_output_key(v, 0),
}


@pytest.mark.parametrize("label", sorted(HOSTILE_IDS))
def test_hostile_ids_are_refused_by_validate_id_every_key_builder_and_the_store(tmp_path, label):
    value, expect = HOSTILE_IDS[label]
    with pytest.raises(keys.InvalidIdError) as caught:
        keys.validate_id(value, "character id")
    assert expect in str(caught.value).lower() and "character id" in str(caught.value)
    assert len(str(caught.value)) < 200  # a 10 000-character id is not echoed back in full
    for name, build in KEY_BUILDERS.items():
        with pytest.raises(keys.InvalidIdError):
            build(value)
            pytest.fail(f"{name} accepted {value!r}")

    store = LocalObjectStore(tmp_path / "root")
    if label == "slash":
        return  # "a/b" is a fine two-segment key; as an id (one segment) it is refused above
    for key in (f"characters/{value}/photos/a.png", f"{value}/x", value):
        with pytest.raises(keys.InvalidIdError):
            store.put_bytes(key, b"payload")
        with pytest.raises(keys.InvalidIdError):
            store.get_bytes(key)
    assert tree(tmp_path) == {"root"}


def test_trailing_newline_is_not_a_valid_id():
    # `$` in a regex matches before a final newline; an id must not end in one
    with pytest.raises(keys.InvalidIdError):
        keys.validate_id("photo.png\n")
    with pytest.raises(keys.InvalidIdError):
        keys.validate_key("characters/1/photos/a.png\n")


def test_local_store_refuses_symlinks_that_escape_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    store = LocalObjectStore(tmp_path / "root")
    (store.root / "characters").symlink_to(outside, target_is_directory=True)
    (store.root / "evil.txt").symlink_to(outside / "secret.txt")
    store.put_bytes("fine/ok.txt", b"ok")

    for key in ("characters/1/photos/a.png", "characters/secret.txt"):
        with pytest.raises(keys.InvalidIdError, match="outside the store root"):
            store.put_bytes(key, b"overwrite")
    with pytest.raises(keys.InvalidIdError, match="outside the store root"):
        store.get_bytes("evil.txt")
    with pytest.raises(keys.InvalidIdError, match="outside the store root"):
        store.delete("evil.txt")
    assert [info.key for info in store.list()] == ["fine/ok.txt"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "not yours"


@pytest.fixture()
def database(app_db):
    return app_db


@pytest.mark.parametrize("label", sorted(HOSTILE_NAMES))
def test_hostile_character_names_are_stored_verbatim_or_refused_clearly(database, label):
    value, refusal = HOSTILE_NAMES[label]
    repo = CharactersRepository(database)
    before = repo.create("Someone")
    if refusal is None:
        created = repo.create(value)
        assert repo.get(created.id).name == value
        assert keys.validate_id(created.trigger_word) == created.trigger_word  # derived token is always key-safe
    else:
        with pytest.raises(ValueError) as caught:
            repo.create(value)
        assert type(caught.value).__module__.split(".")[0] != "sqlalchemy"
        assert refusal in str(caught.value).lower() and "character name" in str(caught.value)
        assert "INSERT" not in str(caught.value) and "SQL" not in str(caught.value)
        with pytest.raises(ValueError):
            repo.update(before.id, name=value)
    assert repo.get(before.id).name == "Someone"  # nothing else changed
    assert repo.count() == (1 if refusal else 2)


def test_hostile_text_from_a_backend_never_stops_a_job_from_being_recorded(database):
    from hostile.corpus import NON_UTF8

    character = CharactersRepository(database).create("Someone")
    jobs = GenerationJobsRepository(database)
    [job_id] = jobs.enqueue(character.id, "flux", "a portrait", input_metadata={"note": f"nul\x00 {NON_UTF8}"})
    for prompt in ("a\x00b", NON_UTF8):
        with pytest.raises(ValueError, match="prompt (contains a NUL byte|is not valid UTF-8)"):
            jobs.enqueue(character.id, "flux", prompt)
    jobs.claim(job_id, "worker")

    job = jobs.finish(job_id, "failed", error=f"backend said \x00 {NON_UTF8}", sent_prompt="echo\x00")

    assert job.status == "failed" and jobs.get(job_id).error == "backend said \\x00 caf\\udce9 \\udcff\\udcfe"
    assert jobs.get(job_id).sent_prompt == "echo\\x00"
    assert jobs.get(job_id).input_metadata == {"note": f"nul\x00 {NON_UTF8}"}  # JSON escapes both
    assert [j.id for j in jobs.list()] == [job_id]


@pytest.mark.parametrize("label", sorted(HOSTILE_NAMES))
def test_character_add_cli_with_a_hostile_name(tmp_path, lp_home, label, faces_dir):
    value, refusal = HOSTILE_NAMES[label]
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((faces_dir / "katy_perry" / GOOD_PHOTOS[0]).read_bytes())
    runner = CliRunner()

    result = runner.invoke(main, ["character", "add", "--name", value, "--photos", str(folder)])

    if refusal is None:
        assert result.exit_code == 0, result.output
        status = json.loads(runner.invoke(main, ["status", "--json"]).stdout)
        assert [c["name"] for c in status["characters"]] == [value]
        assert all(k.startswith("characters/1/photos/") for k in status["characters"][0]["photo_keys"])
    else:
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert result.stderr.startswith("Error: ") and refusal in result.stderr.lower()
        assert "Traceback" not in result.output
        assert not lp_home.exists()  # refused before any home was made
        return
    assert tree(lp_home / "objects") <= {"characters", "characters/1", "characters/1/photos"} | {
        f"characters/1/photos/{p.name}" for p in (lp_home / "objects").rglob("*.jpg")}


# --- prompts and models through generation ---------------------------------------------------------------


@pytest.fixture(scope="module")
def generation_world(tmp_path_factory):
    """A PipelineContext on a tmp home, the simulated GPU in this process, and a character with a ready flux
    LoRA (a valid file in the store) so prompts take the LoRA route and get its trigger word."""
    from lora_pipelines.services.context import PipelineContext
    from lora_pipelines.settings import Settings
    from lora_pipelines.store.lora_models import LoraModelsRepository
    from sim_gpu.files import lora_file_bytes
    from sim_gpu.server import SimGpuServer

    home = tmp_path_factory.mktemp("generation_world")
    with pytest.MonkeyPatch.context() as mp, SimGpuServer(home / "sim", allowed_roots=[home / "objects"],
                                                          training_seconds=0.1) as sim:
        mp.setenv("LORA_PIPELINES_SIM_GPU_URL", sim.url)
        settings = Settings(home=home, sim_gpu_url=sim.url, database_url=None, store_url=None,
                            gpu_backend="simulated", gpu_timeout_seconds=30)
        ctx = PipelineContext.from_settings(settings)
        ctx.db.upgrade()
        character = CharactersRepository(ctx.db).create("Zed", lora_enabled=True, trigger_word="ohwx_zed")
        data = lora_file_bytes(base_model="flux", trigger_word="ohwx_zed", rank=4, steps=10, faces=[],
                               character_id=str(character.id), seed=1)
        key = keys.lora_key("flux", str(character.id), "job1")
        info = ctx.store.put_bytes(key, data)
        loras = LoraModelsRepository(ctx.db)
        row = loras.create(character.id, "flux", "ohwx_zed", idempotency_key="hostile-zed-flux")
        loras.transition(row.id, "training")
        loras.transition(row.id, "ready", model_path=key, sha256=info.sha256, size_bytes=len(data))
        ctx.character = character
        yield ctx


def test_sql_and_template_injection_prompts_are_stored_and_sent_verbatim(generation_world):
    from lora_pipelines.services.generation import run_generation_job

    ctx = generation_world
    jobs = GenerationJobsRepository(ctx.db)
    ids = [jobs.enqueue(ctx.character.id, "flux", prompt)[0] for prompt in HOSTILE_PROMPTS]

    outcomes = [run_generation_job(ctx, job_id, worker="hostile-test") for job_id in ids]

    assert [o.status for o in outcomes] == ["succeeded"] * len(ids)
    for job_id, prompt in zip(ids, HOSTILE_PROMPTS, strict=True):
        job = jobs.get(job_id)
        assert job.prompt == prompt
        assert job.mode == "lora" and job.trigger_word == "ohwx_zed"
        assert job.sent_prompt == f"ohwx_zed, {prompt}"  # what the backend received, echoed back by it
    with ctx.db.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {"characters", "lora_models", "generation_jobs"} <= tables
        assert conn.execute(sa.text("select count(*) from generation_jobs")).scalar() >= len(ids)


def test_generate_cli_stores_an_injection_prompt_verbatim_and_refuses_unknown_models(generation_world, monkeypatch):
    ctx = generation_world
    monkeypatch.setenv("LORA_PIPELINES_HOME", str(ctx.settings.home))
    runner = CliRunner()

    result = runner.invoke(main, ["generate", "--character", str(ctx.character.id), "--model", "flux",
                                  "--prompt", SQL_INJECTION_PROMPT])
    assert result.exit_code == 0, result.output
    job_id = int(result.stdout.split()[-1])
    assert GenerationJobsRepository(ctx.db).get(job_id).prompt == SQL_INJECTION_PROMPT

    for model in ("sdxl-lightning", "flux'; DROP TABLE generation_jobs;--", "../../flux"):
        result = runner.invoke(main, ["generate", "--character", str(ctx.character.id), "--model", model,
                                      "--prompt", "a portrait"])
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: unknown model ") and "known models: z-image-turbo" in result.stderr
    for prompt, words in (("a\x00b", "nul byte"), ("   ", "empty"), ("x" * 5000, "limit")):
        result = runner.invoke(main, ["generate", "--character", str(ctx.character.id), "--model", "flux",
                                      "--prompt", prompt])
        assert result.exit_code == 1 and words in result.stderr.lower()


def test_unknown_model_job_fails_with_the_reason_and_the_rest_of_the_batch_succeeds(generation_world):
    from lora_pipelines.services.generation import run_generation_job

    ctx = generation_world
    jobs = GenerationJobsRepository(ctx.db)
    models = ["flux", "sdxl-lightning", "flux'); DROP TABLE generation_jobs;--", "flux"]
    ids = [jobs.enqueue(ctx.character.id, model, "a portrait in the rain")[0] for model in models]

    for job_id in ids:
        run_generation_job(ctx, job_id, worker="hostile-batch")

    finished = [jobs.get(job_id) for job_id in ids]
    assert [j.status for j in finished] == ["succeeded", "failed", "failed", "succeeded"]
    for job, model in zip(finished[1:3], models[1:3], strict=True):
        assert job.error.startswith(f"unknown model {model!r}") and job.output_keys == []
    assert all(j.output_keys and ctx.store.exists(j.output_keys[0]) for j in (finished[0], finished[3]))


def test_prompts_the_queue_accepted_but_no_route_can_take_never_leave_a_job_running(generation_world):
    """Jobs written by other producers than the CLI: an empty prompt fails with the reason; a prompt too long
    once the trigger word is added skips the LoRA route and still succeeds through the fallback."""
    from lora_pipelines.domain.prompts import MAX_PROMPT_CHARS
    from lora_pipelines.services.generation import run_generation_job

    ctx = generation_world
    jobs = GenerationJobsRepository(ctx.db)
    [empty] = jobs.enqueue(ctx.character.id, "flux", "   ")
    [long] = jobs.enqueue(ctx.character.id, "flux", "y" * (MAX_PROMPT_CHARS - 2))

    run_generation_job(ctx, empty, worker="hostile-prompts")
    run_generation_job(ctx, long, worker="hostile-prompts")

    failed, fell_back = jobs.get(empty), jobs.get(long)
    assert (failed.status, failed.error) == ("failed", "prompt is empty")
    assert fell_back.status == "succeeded" and fell_back.mode != "lora"
    assert fell_back.lora_skipped_reason == "lora_route_failed"
    assert "InvalidPromptError" in fell_back.input_metadata["routes"][0]["error"]


# --- ComfyUI responses with missing or malformed fields --------------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, object]] = {}

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        status, body = self.routes.get((method, path)) or self.routes.get((method, path.rsplit("/", 1)[0] + "/*"),
                                                                            (404, {"error": "no route"}))
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def scripted_comfy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


WORKFLOW = {"3": {"class_type": "KSampler", "inputs": {}}}
OBJECT_INFO = (200, {"KSampler": {"input": {}}})
DONE = {"status": {"status_str": "success", "completed": True, "messages": []}}

# label -> (routes, action, words the error must contain)
COMFY_CASES = {
    "object_info_is_a_list": ({("GET", "/object_info"): (200, ["KSampler"])}, "queue", "/object_info"),
    "prompt_id_missing": ({("POST", "/prompt"): (200, {"number": 1})}, "queue", "'prompt_id' is missing"),
    "prompt_id_not_a_string": ({("POST", "/prompt"): (200, {"prompt_id": 7})}, "queue", "'prompt_id' is a json int"),
    "prompt_id_path_traversal": ({("POST", "/prompt"): (200, {"prompt_id": "../../admin"})}, "queue",
                                 "not a usable id"),
    "prompt_body_a_list": ({("POST", "/prompt"): (200, [1, 2])}, "queue", "/prompt"),
    "prompt_body_not_json": ({("POST", "/prompt"): (200, b"<html>ok</html>")}, "queue", "not json"),
    "node_errors_malformed": ({("POST", "/prompt"): (400, {"error": "invalid prompt", "node_errors": {"3": "bad"}})},
                              "queue", "node 3"),
    "history_body_a_list": ({("GET", "/history/*"): (200, [])}, "wait", "/history"),
    "history_entry_a_string": ({("GET", "/history/*"): (200, {"p1": "done"})}, "wait", "entry 'p1'"),
    "history_status_a_string": ({("GET", "/history/*"): (200, {"p1": {"status": "finished"}})}, "wait",
                                "field 'status'"),
    "execution_error_malformed": ({("GET", "/history/*"): (200, {"p1": {"status": {
        "status_str": "error", "messages": [["execution_error", "boom"], "junk"]}}})}, "wait", "execution failed"),
    "outputs_a_list": ({("GET", "/history/*"): (200, {"p1": {**DONE, "outputs": []}})}, "fetch", "field 'outputs'"),
    "image_filename_missing": ({("GET", "/history/*"): (200, {"p1": {**DONE, "outputs": {
        "9": {"images": [{"subfolder": "", "type": "output"}]}}}})}, "fetch", "'filename' is missing"),
    "images_not_a_list": ({("GET", "/history/*"): (200, {"p1": {**DONE, "outputs": {"9": {"images": "a.png"}}}})},
                          "fetch", "images is a json string"),
    "loras_an_object": ({("GET", "/models/loras"): (200, {"a.safetensors": 1})}, "loras", "/models/loras"),
    "upload_name_missing": ({("POST", "/upload/image"): (200, {"subfolder": ""})}, "upload", "'name' is missing"),
}


@pytest.mark.parametrize("label", sorted(COMFY_CASES))
def test_comfyui_responses_with_missing_fields_raise_a_gpu_error_naming_them(scripted_comfy, label):
    routes, action, words = COMFY_CASES[label]
    _Scripted.routes = {("GET", "/object_info"): OBJECT_INFO, ("POST", "/prompt"): (200, {"prompt_id": "p1"}),
                        **routes}
    client = ComfyUIClient(scripted_comfy, timeout_s=5, attempts=1, name="comfyui")
    actions = {
        "queue": lambda: client.queue_prompt(WORKFLOW),
        "wait": lambda: client.wait("p1", timeout_s=2, poll_interval=0.05),
        "fetch": lambda: client.fetch_outputs("p1"),
        "loras": client.list_loras,
        "upload": lambda: client.upload_image(b"png", "ref.png"),
    }
    try:
        with pytest.raises(GpuBackendError) as caught:
            actions[action]()
    finally:
        client.close()
    message = str(caught.value)
    assert message.startswith("comfyui /") and words in message.lower(), message
    assert caught.value.endpoint in message

