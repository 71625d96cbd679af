"""The LoRA lifecycle from the command line: generate --strength/--lora refused at enqueue, lora list/activate,
feedback (one, and a CSV all-or-nothing), status's satisfaction line, and retention's dry run and run removing a
LoRA's files from the store, the simulated service's trained copy and the pod cache."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from lora_pipelines.cli import main
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_activations import LoraActivationsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.tables import utcnow


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
        message = result.output.strip().splitlines()[-1]  # click puts usage lines before a usage error
        assert message.startswith("Error: ") and "Traceback" not in result.output, result.output
    return result


class Seeded:
    def __init__(self) -> None:
        self.ctx = PipelineContext.from_settings()
        self.ctx.db.upgrade()
        chars = CharactersRepository(self.ctx.db)
        self.anna = chars.create("Anna", lora_enabled=True)
        self.bob = chars.create("Bob", lora_enabled=True)
        self.loras = LoraModelsRepository(self.ctx.db)
        self.jobs = GenerationJobsRepository(self.ctx.db)

    def ready(self, character, base_model="flux", score=None, days_ago=0.0, files=True):
        n = len(self.loras.find_by_character_id(character.id)) + 1
        row = self.loras.create(character.id, base_model, character.trigger_word, f"k-{character.id}-{base_model}-{n}")
        key = f"loras/{base_model}-character-{character.id}/{row.id}.safetensors"
        if files:
            self.ctx.store.put_bytes(key, b"lora bytes")
            self.ctx.store.put_bytes(key.replace(".safetensors", ".step000025.safetensors"), b"checkpoint")
        self.loras.transition(row.id, "training", gpu_call_id=f"fc-{row.id:024d}")
        finished = utcnow() - timedelta(days=days_ago)
        return self.loras.transition(row.id, "ready", model_path=key, sha256="b" * 64, validation_score=score,
                                     finished_at=finished)

    def done_job(self, character, lora=None, status="succeeded"):
        [job] = self.jobs.enqueue(character.id, "flux", "a portrait")
        self.jobs.claim(job, "w")
        self.jobs.finish(job, status, lora_model_id=lora.id if lora else None, mode="lora" if lora else "standard")
        return job


@pytest.fixture()
def seeded(lp_home):
    world = Seeded()
    yield world
    world.ctx.close()


def test_generate_records_strength_and_pin_and_refuses_bad_requests_in_one_line(seeded):
    anna, bob = seeded.anna, seeded.bob
    flux = seeded.ready(anna, score=0.6)
    qwen = seeded.ready(anna, "qwen-image")
    bobs = seeded.ready(bob)

    out = run("generate", "--character", str(anna.id), "--model", "flux", "--prompt", "at the beach",
              "--strength", "0.8", "--lora", str(flux.id))
    job = seeded.jobs.get(int(out.output.split("jobs ")[1].split()[0]))
    assert (job.requested_strength, job.requested_lora_model_id) == (0.8, flux.id)

    refusals = {
        ("--strength", "2.5"): "strength must be a number from 0 to 2, got 2.5",
        ("--strength", "-1"): "strength must be a number from 0 to 2",
        ("--lora", str(bobs.id)): f"LoRA {bobs.id} belongs to character {bob.id}, not {anna.id}",
        ("--lora", str(qwen.id)): f"LoRA {qwen.id} is a qwen-image LoRA; this model needs a flux one",
        ("--lora", "4242"): "LoRA 4242 does not exist",
    }
    for extra, message in refusals.items():
        result = run("generate", "--character", str(anna.id), "--model", "flux", "--prompt", "x", *extra, ok=False)
        assert message in result.output
    result = run("generate", "--character", str(anna.id), "--model", "one-2.1", "--prompt", "x", "--lora",
                 str(flux.id), ok=False)
    assert "model one-2.1 does not apply LoRAs, so --lora cannot be used with it" in result.output
    assert len(seeded.jobs.list()) == 1  # nothing refused was enqueued


def test_lora_list_and_activate_roll_back_with_who_and_why(seeded):
    versions = LoraActivationsRepository(seeded.ctx.db)
    good = seeded.ready(seeded.anna, score=0.72)
    versions.gate(good.id)
    worse = seeded.ready(seeded.anna, score=0.40)
    versions.gate(worse.id, tolerance=0.03)

    listing = run("lora", "list", "--character", str(seeded.anna.id)).output
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in listing.splitlines()[1:3]}
    assert lines[str(good.id)].startswith("*") and "0.720" in lines[str(good.id)]
    assert not lines[str(worse.id)].startswith("*") and "below active LoRA" in lines[str(worse.id)]

    out = run("lora", "activate", str(worse.id), "--reason", "new photos", "--by", "maria").output
    assert f"LoRA {worse.id} is now used" in out and f"LoRA {good.id} was in use" in out
    data = json.loads(run("lora", "list", "--character", str(seeded.anna.id), "--json").output)
    assert [v["id"] for v in data["loras"] if v["active"]] == [worse.id]
    latest = data["activations"][0]
    assert (latest["lora_model_id"], latest["by"], latest["reason"], latest["kind"]) == (worse.id, "maria",
                                                                                        "new photos", "manual")
    assert "at" in latest

    assert f"LoRA {good.id} is now used" in run("lora", "activate", str(good.id), "--reason", "roll back").output
    assert "LoRA 999 does not exist" in run("lora", "activate", "999", "--reason", "x", ok=False).output
    assert "character 999 does not exist" in run("lora", "list", "--character", "999", ok=False).output
    assert "--reason" in run("lora", "activate", str(good.id), ok=False).output


def test_feedback_one_job_and_a_csv_all_or_nothing_feed_status(seeded, tmp_path):
    lora = seeded.ready(seeded.anna, score=0.6)
    lora_jobs = [seeded.done_job(seeded.anna, lora) for _ in range(4)]
    plain_job = seeded.done_job(seeded.bob)
    failed_job = seeded.done_job(seeded.anna, status="failed")

    assert "job" in run("feedback", "--job", str(lora_jobs[0]), "--rating", "better", "--note", "that's her").output
    for args, message in {
        ("--job", "999", "--rating", "better"): "generation job 999 does not exist",
        ("--job", str(lora_jobs[1]), "--rating", "7"): "rating '7' is not one of better, same, worse or a score",
        ("--job", str(failed_job), "--rating", "worse"): f"generation job {failed_job} is failed",
        ("--job", str(lora_jobs[1]),): "give --job ID and --rating R",
        ("--job", str(lora_jobs[1]), "--rating", "5", "--by", "x" * 201): "who rates (--by) must be 1 to 200",
    }.items():
        assert message in run("feedback", *args, ok=False).output

    bad = tmp_path / "export.csv"
    bad.write_text(f"job_id,rating,rated_by\n{lora_jobs[1]},5,ann\n{lora_jobs[2]},better,bo\n999,worse,cy\n")
    result = run("feedback", "import", str(bad), ok=False)
    assert "export.csv: line 4: generation job 999 does not exist; nothing was imported" in result.output
    bad.write_text(f"job_id,rating\n{lora_jobs[1]},5\n{lora_jobs[2]},awesome\n")
    assert "export.csv: line 3: rating 'awesome'" in run("feedback", "import", str(bad), ok=False).output
    assert "missing.csv" in run("feedback", "import", str(tmp_path / "missing.csv"), ok=False).output

    good = tmp_path / "good.csv"
    good.write_text(f"job_id,rating,note,rated_by\n{lora_jobs[1]},5,,ann\n{lora_jobs[2]},same,,bo\n"
                    f"{lora_jobs[3]},4,,cy\n{plain_job},worse,no lora,cy\n")
    assert "imported 4 rating(s) from good.csv (3 of LoRA generations)" in run("feedback", "import", str(good)).output

    data = json.loads(run("status", "--json").output)
    assert data["user_satisfaction"] == {"rate": 0.75, "better": 3, "ratings": 4, "target": 0.8, "window_days": 30.0}
    assert "users reporting better consistency with LoRA: 75.0% of 4 ratings" in run("status").output


def test_retention_dry_run_then_run_removes_files_everywhere_but_keeps_what_is_used(seeded, tmp_path, monkeypatch):
    from sim_gpu.server import SimGpuServer

    sim = SimGpuServer(tmp_path / "sim", allowed_roots=[tmp_path])
    sim.start()
    monkeypatch.setenv("LORA_PIPELINES_SIM_GPU_URL", sim.url)
    try:
        anna = seeded.anna  # no activations: the newest ready LoRA is the active one, each older one was used until
        old = seeded.ready(anna, days_ago=90)  # the next became ready
        pinned = seeded.ready(anna, days_ago=80)
        seeded.jobs.enqueue(anna.id, "flux", "later", lora_model_id=pinned.id, base_model="flux")
        active = seeded.ready(anna, days_ago=60)
        # the GPU side's own copies of `old`: the simulated service's trained file, the pod cache
        trained = tmp_path / "sim" / "trained"
        (trained / f"{old.gpu_call_id}.safetensors").write_bytes(b"x")
        (trained / f"{old.gpu_call_id}.step000025.safetensors").write_bytes(b"x")
        pod = tmp_path / "sim" / "models" / "loras"
        (pod / f"{old.id}.safetensors").write_bytes(b"x")
        old_files = [info.key for info in seeded.ctx.store.list(f"loras/flux-character-{anna.id}/{old.id}.")]
        assert len(old_files) == 2

        dry = json.loads(run("lora", "retention", "--dry-run", "--older-than-days", "30", "--json").output)
        assert [i["lora_model_id"] for i in dry["archived"]] == [old.id] and dry["dry_run"] is True
        assert dry["kept"] == {"active": 1, "pinned": 1} and sorted(dry["archived"][0]["files"]) == old_files
        assert seeded.loras.get(old.id).status == "ready" and all(seeded.ctx.store.exists(k) for k in old_files)

        out = run("lora", "retention", "--older-than-days", "30").output
        assert f"archived 1 LoRA(s) idle for more than 30 days\n  LoRA {old.id}" in out
        assert seeded.loras.get(old.id).status == "archived"
        assert not any(seeded.ctx.store.exists(k) for k in old_files)
        assert not list(trained.glob(f"{old.gpu_call_id}*")) and not (pod / f"{old.id}.safetensors").exists()
        assert {seeded.loras.get(i).status for i in (pinned.id, active.id)} == {"ready"}
        assert seeded.ctx.store.exists(active.model_path) and seeded.ctx.store.exists(pinned.model_path)

        again = json.loads(run("lora", "retention", "--older-than-days", "30", "--json").output)
        assert again["archived"] == []
        assert "Invalid value" in run("lora", "retention", "--older-than-days", "0", ok=False).output
    finally:
        sim.stop()
