"""The user_satisfaction check in a Dagster run: WARN under 80% of ratings of LoRA generations saying "better",
not measured (failed) without ratings, split by character and base model; and the report's section."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from lora_pipelines.checks.feedback import FEEDBACK_CHECKS
from lora_pipelines.reporting.report import build_report
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.feedback import record_feedback
from lora_pipelines.settings import Settings
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects import open_store


def run_check(url: str) -> dg.AssetCheckEvaluation:
    defs = dg.Definitions(assets=[dg.AssetSpec("lora_quality_report")], asset_checks=FEEDBACK_CHECKS,
                          resources={"pipeline": PipelineResource(database_url=url)})
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation


@pytest.fixture()
def ctx(tmp_path, lp_home):
    db = Database(f"sqlite:///{tmp_path / 'app.db'}")
    db.upgrade()
    yield PipelineContext(settings=Settings(home=tmp_path), db=db, store=open_store(str(tmp_path / "objects")))
    db.dispose()


def _lora_jobs(ctx, name: str, base_model: str, count: int) -> list[int]:
    character = CharactersRepository(ctx.db).create(name, lora_enabled=True)
    loras = LoraModelsRepository(ctx.db)
    lora = loras.create(character.id, base_model, character.trigger_word, f"k-{name}-{base_model}")
    loras.transition(lora.id, "training")
    loras.transition(lora.id, "ready")
    jobs = GenerationJobsRepository(ctx.db)
    ids = jobs.enqueue(character.id, base_model, "a portrait", count=count)
    for job in ids:
        jobs.claim(job, "w")
        jobs.finish(job, "succeeded", lora_model_id=lora.id, mode="lora")
    return ids


def test_no_ratings_is_not_measured_and_fails(ctx):
    evaluation = run_check(ctx.db.url)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == "not measured: no ratings of LoRA generations in the last 30 days"


def test_the_share_of_better_ratings_by_character_and_base_model(ctx):
    anna = _lora_jobs(ctx, "Anna", "flux", 4)
    bo = _lora_jobs(ctx, "Bo", "qwen-image", 2)
    for job, rating in zip(anna, ["better", "5", "4", "same"], strict=True):
        record_feedback(ctx, job, rating, by="u1")
    record_feedback(ctx, anna[3], "better", by="u2")  # a second person on the same image
    record_feedback(ctx, bo[0], "worse", by="u1")
    old = datetime.now(UTC) - timedelta(days=45)  # outside the 30-day window
    record_feedback(ctx, bo[1], "worse", by="u1", at=old)

    evaluation = run_check(ctx.db.url)

    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert (meta["numerator"], meta["denominator"]) == (4, 6) and not evaluation.passed
    assert meta["rate"] == pytest.approx(4 / 6) and meta["target"] == 0.8
    assert meta["by_base_model"] == {"flux": {"ratings": 5, "better": 4, "rate": 0.8},
                                     "qwen-image": {"ratings": 1, "better": 0, "rate": 0.0}}
    assert {r["ratings"] for r in meta["by_character"].values()} == {5, 1}
    assert evaluation.description == "66.7% of 6 ratings say better (target ≥ 80%)"

    report = build_report(ctx, day=date.today())
    assert report.satisfaction.denominator == 7  # the report's window is every finished job: all ratings
    checks = report.tables["checks"].set_index("check")
    assert checks.loc["user_satisfaction", "denominator"] == 7 and not checks.loc["user_satisfaction", "passed"]
    by_model = report.tables["satisfaction_by_base_model"].set_index("base_model")
    assert by_model.loc["qwen-image", ["ratings", "worse"]].tolist() == [2, 2]
    markdown = ctx.store.get_bytes(f"{report.prefix}/report.md").decode()
    assert "## Users' verdict by character" in markdown and "| Anna |" in markdown
