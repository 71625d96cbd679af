"""`lora-pipelines status [--json]`: the JSON shape operators' scripts rely on, and the table."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lora_pipelines.cli import main
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository

CHARACTER_FIELDS = {"id", "name", "lora_enabled", "photo_keys", "loras"}
LORA_FIELDS = {"id", "status", "base_model", "model_path", "model_url", "sha256", "trigger_word"}
JOB_FIELDS = {"id", "character_id", "model", "status", "prompt", "lora_model_id", "trigger_word",
              "lora_skipped_reason", "backend", "output_keys"}
METRICS = {"lora_usage_rate", "face_match_rate_with_lora", "face_match_rate_without_lora",
           "generation_success_rate", "fallback_success_rate"}


def _seed(lp_home):
    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    chars, loras, jobs = (CharactersRepository(ctx.db), LoraModelsRepository(ctx.db), GenerationJobsRepository(ctx.db))
    anna = chars.create("Anna", lora_enabled=True, photo_keys=["characters/1/photos/a.jpg"])
    bob = chars.create("Bob", lora_enabled=False)
    lora = loras.create(anna.id, "flux", anna.trigger_word, "k1", "h" * 64, "ai-toolkit")
    loras.transition(lora.id, "training", gpu_call_id="fc-1")
    lora = loras.transition(lora.id, "ready", model_path=f"loras/flux-character-{anna.id}/{lora.id}.safetensors",
                            model_url="file:///x", sha256="a" * 64, size_bytes=10)
    used, fallback, pending = jobs.enqueue(anna.id, "flux", "a portrait", count=1) + \
        jobs.enqueue(bob.id, "flux", "a beach", count=1) + jobs.enqueue(bob.id, "flux", "later", count=1)
    jobs.claim(used, "w")
    jobs.finish(used, "succeeded", sent_prompt=f"{anna.trigger_word}, a portrait", lora_model_id=lora.id,
                trigger_word=anna.trigger_word, mode="lora", backend="simulated",
                output_keys=[f"generations/{used}/000.png"])
    jobs.record_face_score(used, 0.3, True, 1)
    jobs.claim(fallback, "w")
    jobs.finish(fallback, "succeeded", sent_prompt="a beach", lora_skipped_reason="lora_disabled", mode="face_swap",
                backend="simulated", output_keys=[f"generations/{fallback}/000.png"])
    jobs.record_face_score(fallback, 0.7, False, 1)
    return ctx, anna, lora, (used, fallback, pending)


def test_status_json_has_the_documented_shape_and_values(lp_home):
    ctx, anna, lora, (used, fallback, pending) = _seed(lp_home)
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)

    assert data["store"]["url"] == ctx.store.url
    assert all(CHARACTER_FIELDS <= set(c) for c in data["characters"])
    by_name = {c["name"]: c for c in data["characters"]}
    assert by_name["Anna"]["photo_keys"] == ["characters/1/photos/a.jpg"] and by_name["Anna"]["lora_enabled"] is True
    assert by_name["Bob"]["loras"] == []
    [anna_lora] = by_name["Anna"]["loras"]
    assert LORA_FIELDS <= set(anna_lora)
    assert (anna_lora["id"], anna_lora["status"], anna_lora["base_model"], anna_lora["sha256"]) == (
        lora.id, "ready", "flux", "a" * 64)

    assert all(JOB_FIELDS <= set(j) for j in data["generation_jobs"])
    assert [j["id"] for j in data["generation_jobs"]] == [pending, fallback, used]  # newest first
    jobs = {j["id"]: j for j in data["generation_jobs"]}
    assert jobs[used]["prompt"] == f"{anna.trigger_word}, a portrait"  # as sent, with the trigger word
    assert (jobs[used]["lora_model_id"], jobs[used]["trigger_word"]) == (lora.id, anna.trigger_word)
    assert (jobs[fallback]["lora_model_id"], jobs[fallback]["lora_skipped_reason"]) == (None, "lora_disabled")
    assert jobs[pending]["prompt"] == "later" and jobs[pending]["output_keys"] == []

    metrics = data["metrics"]
    assert set(metrics) == METRICS
    assert metrics["lora_usage_rate"] == 1.0 and metrics["generation_success_rate"] == 1.0
    assert metrics["face_match_rate_with_lora"] == 1.0 and metrics["face_match_rate_without_lora"] == 0.0
    assert metrics["fallback_success_rate"] == 1.0


def test_status_on_an_empty_system_reports_null_rates_and_a_table(lp_home):
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    assert data["characters"] == [] and data["generation_jobs"] == []
    assert data["metrics"] == {name: None for name in METRICS}
    table = CliRunner().invoke(main, ["status"])
    assert table.exit_code == 0 and "LoRA usage n/a" in table.stdout


def test_status_json_splits_face_match_by_reference_and_recogniser(lp_home):
    ctx, anna, lora, (used, fallback, _pending) = _seed(lp_home)
    jobs = GenerationJobsRepository(ctx.db)
    # the LoRA job: against held-out photos dlib matches and SFace does not; against training photos both match
    jobs.record_face_score(used, 0.55, True, 1, face_reference="held_out", sface_similarity=0.31, sface_match=False,
                           in_sample_face_match=True, in_sample_sface_match=True)
    jobs.record_face_score(fallback, 0.7, False, 1, face_reference="in_sample", sface_similarity=0.1,
                           sface_match=False, in_sample_face_match=False, in_sample_sface_match=False)
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)

    assert set(data["metrics"]) == METRICS  # every field it had stays
    split = data["face_match"]
    with_lora = split["with_lora"]
    assert with_lora["held_out"]["dlib"] == {"rate": 1.0, "matched": 1, "scored": 1}
    assert with_lora["held_out"]["sface"] == {"rate": 0.0, "matched": 0, "scored": 1}
    assert with_lora["in_sample"]["dlib"]["rate"] == 1.0 and with_lora["in_sample"]["sface"]["rate"] == 1.0
    without = split["without_lora"]
    assert without["held_out"]["dlib"] == {"rate": None, "matched": 0, "scored": 0}  # never mixed with in-sample
    assert without["in_sample"]["dlib"] == {"rate": 0.0, "matched": 0, "scored": 1}
    assert split["recogniser_disagreement"] == {"rate": 0.5, "disagree": 1, "scored_by_both": 2,
                                                "dlib_match_rate": 0.5, "sface_match_rate": 0.0}
    job = {j["id"]: j for j in data["generation_jobs"]}[used]
    assert (job["face_reference"], job["sface_similarity"], job["sface_match"]) == ("held_out", 0.31, False)
    table = CliRunner().invoke(main, ["status"]).stdout
    assert "face match with lora: held-out dlib 100.0% / sface 0.0%" in table
