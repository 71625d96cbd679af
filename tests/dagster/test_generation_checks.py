"""The four quality checks on generation_outputs, executed by Dagster against seeded databases.

A healthy baseline passes all four; each scenario then breaks exactly one metric and only its check may fail,
naming the seeded bad jobs as its worst offenders.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from lora_pipelines.assets.report import latest_check_results
from lora_pipelines.checks.generation import GENERATION_CHECKS
from lora_pipelines.reporting.report import build_report
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.settings import Settings
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects import open_store

CHECKS = ("face_consistency", "lora_usage_rate", "generation_success_rate", "fallback_success")
SEVERITY = {"face_consistency": dg.AssetCheckSeverity.WARN, "lora_usage_rate": dg.AssetCheckSeverity.ERROR,
            "generation_success_rate": dg.AssetCheckSeverity.ERROR, "fallback_success": dg.AssetCheckSeverity.ERROR}


@dataclass
class Seeder:
    """Writes finished generation jobs through the repositories, as the generation flow would."""

    db: Database
    characters: dict[str, int] = field(default_factory=dict)
    lora_of: dict[str, int] = field(default_factory=dict)

    def character(self, name: str, with_lora: bool) -> None:
        chars, loras = CharactersRepository(self.db), LoraModelsRepository(self.db)
        character = chars.create(name, lora_enabled=with_lora)
        self.characters[name] = character.id
        if with_lora:
            row = loras.create(character.id, "flux", character.trigger_word, f"flux-{character.id}")
            loras.transition(row.id, "training")
            self.lora_of[name] = loras.transition(row.id, "ready").id

    def jobs(self, name: str, count: int, *, path: str, status: str = "succeeded", match: bool | None = None,
             distance: float | None = None, finished_at: datetime | None = None) -> list[int]:  # fmt: skip
        repo = GenerationJobsRepository(self.db)
        fields = {
            "lora": {"lora_model_id": self.lora_of.get(name), "mode": "lora"},
            "route_failed": {"lora_skipped_reason": "lora_route_failed", "mode": "face_swap"},
            "standard": {"lora_skipped_reason": "no_ready_lora", "mode": "standard"},
        }[path]
        if finished_at is not None:
            fields["finished_at"] = finished_at
        ids = repo.enqueue(self.characters[name], "flux", "a portrait", count=count)
        for job_id in ids:
            repo.claim(job_id, "worker")
            repo.finish(job_id, status, backend="simulated", **fields)
            if status == "succeeded" and match is not None:
                repo.record_face_score(job_id, distance if distance is not None else (0.3 if match else 0.8), match, 1)
        return ids


def baseline(db: Database) -> Seeder:
    """Face 20/20, usage 20/20, success 25/25, fallback 5/5 in the last 24 h; old failures outside the window."""
    s = Seeder(db)
    s.character("Anna", with_lora=True)
    s.character("Ben", with_lora=False)
    s.jobs("Anna", 20, path="lora", match=True)
    s.jobs("Ben", 5, path="standard", match=False)
    two_days_ago = datetime.now(UTC) - timedelta(hours=48)
    s.jobs("Ben", 3, path="standard", status="failed", finished_at=two_days_ago)
    s.jobs("Anna", 3, path="route_failed", status="failed", finished_at=two_days_ago)
    return s


def break_face(s: Seeder) -> list[int]:
    # 20/22 = 90.9% < 95%; worst offenders ordered by face distance, largest first
    far = s.jobs("Anna", 1, path="lora", match=False, distance=0.9)
    near = s.jobs("Anna", 1, path="lora", match=False, distance=0.7)
    return far + near


def break_face_of_one_character(s: Seeder) -> list[int]:
    # overall 42/43 = 97.7% passes, but Cleo's 2/3 does not
    s.character("Cleo", with_lora=True)
    s.jobs("Anna", 20, path="lora", match=True)
    s.jobs("Cleo", 2, path="lora", match=True)
    return s.jobs("Cleo", 1, path="lora", match=False)


def break_usage(s: Seeder) -> list[int]:
    # a usable LoRA whose route failed: 20/23 = 87% < 90% (the face-swap fallback itself succeeded)
    return sorted(s.jobs("Anna", 3, path="route_failed"), reverse=True)


def break_success(s: Seeder) -> list[int]:
    # 25/27 = 92.6% < 95%; failed LoRA jobs are neither fallbacks nor scored
    return sorted(s.jobs("Anna", 2, path="lora", status="failed"), reverse=True)


def break_fallback(s: Seeder) -> list[int]:
    # 5/6 fallbacks succeeded; overall success 25/26 = 96% still passes
    return s.jobs("Ben", 1, path="standard", status="failed")


SCENARIOS = {
    "face_consistency": break_face,
    "lora_usage_rate": break_usage,
    "generation_success_rate": break_success,
    "fallback_success": break_fallback,
}


def run_checks(url: str, instance: dg.DagsterInstance | None = None) -> dict[str, dg.AssetCheckEvaluation]:
    """Execute the real check definitions in a Dagster run, the asset itself standing in as an AssetSpec."""
    defs = dg.Definitions(
        assets=[dg.AssetSpec("generation_outputs")],
        asset_checks=GENERATION_CHECKS,
        resources={"pipeline": PipelineResource(database_url=url)},
    )
    if instance is None:
        with dg.DagsterInstance.ephemeral() as temporary:
            return run_checks(url, temporary)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture()
def db(tmp_path, lp_home):
    database = Database(f"sqlite:///{tmp_path / 'app.db'}")
    database.upgrade()
    yield database
    database.dispose()


def _meta(evaluation: dg.AssetCheckEvaluation, key: str):
    return evaluation.metadata[key].value


def test_healthy_baseline_passes_every_check(db) -> None:
    baseline(db)
    results = run_checks(db.url)
    assert set(results) == set(CHECKS)
    expected = {"face_consistency": (20, 20), "lora_usage_rate": (20, 20), "generation_success_rate": (25, 25),
                "fallback_success": (5, 5)}  # fmt: skip
    for name, (numerator, denominator) in expected.items():
        evaluation = results[name]
        assert evaluation.passed, (name, evaluation.description)
        assert evaluation.severity == SEVERITY[name]
        assert (_meta(evaluation, "numerator"), _meta(evaluation, "denominator")) == (numerator, denominator)
        assert _meta(evaluation, "worst_offenders") == []


@pytest.mark.parametrize("broken", CHECKS)
def test_each_check_fails_below_its_target_and_names_the_bad_jobs(db, broken) -> None:
    bad_ids = SCENARIOS[broken](baseline(db))
    results = run_checks(db.url)
    for name, evaluation in results.items():
        if name != broken:
            assert evaluation.passed, f"{name} failed when only {broken} was broken: {evaluation.description}"
    failed = results[broken]
    assert not failed.passed
    assert failed.severity == SEVERITY[broken]
    numerator, denominator = _meta(failed, "numerator"), _meta(failed, "denominator")
    assert denominator - numerator == len(bad_ids)
    assert _meta(failed, "rate") == pytest.approx(numerator / denominator)
    assert _meta(failed, "rate") < _meta(failed, "target")
    assert _meta(failed, "worst_offenders") == bad_ids


def test_face_consistency_fails_for_one_character_below_target(db) -> None:
    seeder = baseline(db)
    bad = break_face_of_one_character(seeder)
    evaluation = run_checks(db.url)["face_consistency"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert _meta(evaluation, "rate") >= 0.95
    assert _meta(evaluation, "characters_below_target") == [str(seeder.characters["Cleo"])]
    assert _meta(evaluation, "worst_offenders") == bad
    assert _meta(evaluation, "per_character")[str(seeder.characters["Cleo"])]["denominator"] == 3


def test_usage_rate_exactly_at_target_passes(db) -> None:
    seeder = baseline(db)
    seeder.jobs("Anna", 16, path="lora", match=True)
    seeder.jobs("Anna", 4, path="route_failed")
    evaluation = run_checks(db.url)["lora_usage_rate"]
    assert (_meta(evaluation, "numerator"), _meta(evaluation, "denominator")) == (36, 40)
    assert evaluation.passed


@pytest.fixture()
def new_instance():
    """Makes ephemeral Dagster instances, disposed (their temporary folders removed) after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(dg.DagsterInstance.ephemeral())


def test_report_shows_the_checks_dagster_ran(db, tmp_path, new_instance) -> None:
    break_success(baseline(db))
    instance = new_instance()
    results = run_checks(db.url, instance)
    ctx = PipelineContext(settings=Settings(home=tmp_path), db=db, store=open_store(str(tmp_path / "objects")))

    report = build_report(ctx, day=date.today(), recorded_checks=latest_check_results(instance))
    assert report.checks_source == "dagster"
    checks = report.tables["checks"].set_index("check")
    for name, evaluation in results.items():
        assert checks.loc[name, "passed"] == evaluation.passed
        assert checks.loc[name, "severity"] == evaluation.severity.value
        assert checks.loc[name, "source"].startswith("dagster run ")
        assert checks.loc[name, "denominator"] == _meta(evaluation, "denominator")
    assert not checks.loc["generation_success_rate", "passed"]

    # an instance that never ran them: computed from the report's own rates instead
    never_ran = dg.DagsterInstance.ephemeral()
    computed = build_report(ctx, day=date.today(), recorded_checks=latest_check_results(never_ran))
    assert computed.checks_source == "computed"
    assert computed.tables["checks"].set_index("check").loc["generation_success_rate", "passed"] == False  # noqa: E712


def test_face_consistency_fails_when_every_scoring_failed(db) -> None:
    """LoRA jobs that succeeded but could not be scored (the recogniser raised for each): "not measured", failed."""
    seeder = Seeder(db)
    seeder.character("Anna", with_lora=True)
    ids = seeder.jobs("Anna", 4, path="lora", match=None)
    for job_id in ids:
        GenerationJobsRepository(db).merge_input_metadata(job_id, {"faceScoreError": "RuntimeError: model missing"})
    evaluation = run_checks(db.url)["face_consistency"]
    assert not evaluation.passed
    assert evaluation.description == "not measured: 4 job(s) in the window, none measured"
    assert (_meta(evaluation, "numerator"), _meta(evaluation, "denominator"), _meta(evaluation, "not_measured")) == (
        0, 0, 4)


def test_a_window_without_jobs_passes_every_check_with_no_jobs(db) -> None:
    results = run_checks(db.url)
    assert all(e.passed and e.description == "no jobs in the window" for e in results.values())


def test_usage_rate_keeps_refusals_and_ignored_loras_in_the_denominator_by_reason(db) -> None:
    seeder = baseline(db)
    repo = GenerationJobsRepository(db)
    refused = []
    for reason in ("checksum_mismatch", "lora_identity_mismatch", "lora_ignored", "lora_file_unreachable"):
        (job_id,) = repo.enqueue(seeder.characters["Anna"], "flux", "a portrait")
        repo.claim(job_id, "worker")
        repo.finish(job_id, "succeeded", lora_skipped_reason=reason, mode="face_swap", backend="simulated")
        refused.append(job_id)
    # a LoRA of another base model only (no ready one for flux): not in the denominator
    (other,) = repo.enqueue(seeder.characters["Anna"], "flux", "a portrait")
    repo.claim(other, "worker")
    repo.finish(other, "succeeded", lora_skipped_reason="base_model_mismatch", mode="face_swap")
    evaluation = run_checks(db.url)["lora_usage_rate"]
    assert (_meta(evaluation, "numerator"), _meta(evaluation, "denominator")) == (20, 24)
    assert not evaluation.passed
    assert _meta(evaluation, "not_applied_by_reason") == {
        "checksum_mismatch": 1, "lora_identity_mismatch": 1, "lora_ignored": 1, "lora_file_unreachable": 1}
    assert _meta(evaluation, "worst_offenders") == sorted(refused, reverse=True)
