"""The LoRA quality report: its numbers against an independent count of seeded rows, its files, --since, the CLI."""

from __future__ import annotations

import io
import random
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from lora_pipelines.reporting import metrics
from lora_pipelines.reporting import tables as report_tables
from lora_pipelines.reporting.queries import read_report_data
from lora_pipelines.reporting.report import build_report
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.settings import Settings
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects import open_store

UTC = UTC
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY]
# written out here rather than read from the registry, so a registry change cannot hide a report bug
BASE_MODEL_OF = {"flux": "flux", "qwen-image": "qwen-image", "z-image-turbo": "z-image-turbo", "one-2.1": "one-2.1",
                 "mystery-model": "unknown"}  # fmt: skip
RATE_NAMES = ["lora_usage_rate", "face_match_rate_with_lora", "face_match_rate_without_lora",
              "generation_success_rate", "fallback_success_rate"]  # fmt: skip


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


@dataclass
class Seeded:
    db: Database
    ctx: PipelineContext
    character_names: dict[int, str]
    training_minutes: dict[str, list[float]]  # base model -> finished training durations in the whole history


def seed(db: Database, jobs_count: int = 72, rng_seed: int = 20240501) -> dict:
    """Characters, LoRAs through their whole lifecycle, and generation jobs in every state across three days."""
    chars, loras, jobs = CharactersRepository(db), LoraModelsRepository(db), GenerationJobsRepository(db)
    anna = chars.create("Anna", lora_enabled=True)
    ben = chars.create("Ben", lora_enabled=True)
    cleo = chars.create("Cleo", lora_enabled=False)

    def lora(character, base_model, *moves):
        row = loras.create(character.id, base_model, character.trigger_word, f"{base_model}-{character.id}")
        for status, fields in moves:
            row = loras.transition(row.id, status, **fields)
        return row

    old = TODAY - timedelta(days=10)
    anna_flux = lora(anna, "flux", ("training", {"training_started_at": at(DAYS[0], 8)}),
                     ("ready", {"finished_at": at(DAYS[0], 8, 25)}))
    ben_flux = lora(ben, "flux", ("training", {"training_started_at": at(DAYS[1], 9)}),
                    ("ready", {"finished_at": at(DAYS[1], 9, 41)}))
    lora(anna, "qwen-image", ("training", {"training_started_at": at(DAYS[1], 10)}),
         ("failed", {"finished_at": at(DAYS[1], 10, 7), "error": "CUDA out of memory\nTraceback: step 12"}))
    lora(ben, "qwen-image", ("training", {"training_started_at": at(DAYS[2], 0, 1)}),
         ("failed", {"finished_at": at(DAYS[2], 0, 3), "error": "CUDA out of memory\nTraceback: step 3"}))
    lora(cleo, "z-image-turbo", ("failed", {"finished_at": at(DAYS[0], 7), "error": "only 2 usable photos"}))
    lora(anna, "z-image-turbo", ("training", {"training_started_at": at(DAYS[2], 0, 2)}))
    lora(ben, "z-image-turbo")  # pending
    lora(anna, "one-2.1", ("training", {"training_started_at": at(old, 1)}), ("ready", {"finished_at": at(old, 1, 30)}))

    rng = random.Random(rng_seed)
    split_rng = random.Random(rng_seed + 1)  # its own stream: the other numbers stay those of rng_seed
    ready = {anna.id: anna_flux.id, ben.id: ben_flux.id}
    for _ in range(jobs_count):
        character = rng.choice([anna, ben, cleo])
        (job_id,) = jobs.enqueue(character.id, rng.choice(list(BASE_MODEL_OF)), "a portrait")
        path = rng.choice(["lora", "lora", "route_failed", "no_lora"])
        if character.id not in ready:
            path = "no_lora"
        fields = {
            "lora": {"lora_model_id": ready.get(character.id), "mode": "lora"},
            "route_failed": {"lora_skipped_reason": "lora_route_failed", "mode": "face_swap"},
            "no_lora": {"lora_skipped_reason": "no_ready_lora", "mode": "standard"},
        }[path]
        backend = rng.choice(["simulated", "modal", "comfyui", None])
        status = "succeeded" if rng.random() < 0.85 else "failed"
        finished_at = at(rng.choice(DAYS), rng.randrange(0, 3), rng.randrange(60))
        jobs.claim(job_id, "worker-1")
        jobs.finish(job_id, status, backend=backend, finished_at=finished_at, **fields)
        if status == "succeeded" and rng.random() < 0.85:
            if rng.random() < 0.1:
                jobs.record_face_score(job_id, None, None, 0)  # scored, no face found: counts as not matched
            else:
                match = rng.random() < (0.9 if path == "lora" else 0.3)
                jobs.record_face_score(job_id, 0.3 if match else 0.8, match, 1,
                                       face_reference=split_rng.choice(["held_out", "in_sample"]),
                                       sface_match=match if split_rng.random() < 0.8 else not match,
                                       in_sample_face_match=match or split_rng.random() < 0.5,
                                       in_sample_sface_match=split_rng.random() < 0.7)
    # not finished, or refused before running: only the last one counts
    jobs.enqueue(anna.id, "flux", "queued", count=3)
    for job_id in jobs.enqueue(ben.id, "flux", "running", count=2):
        jobs.claim(job_id, "worker-2")
    (refused,) = jobs.enqueue(cleo.id, "qwen-image", "refused")
    jobs.finish(refused, "failed", error="prompt rejected", finished_at=at(DAYS[1], 1), mode="standard")
    return {"names": {c.id: c.name for c in (anna, ben, cleo)},
            "minutes": {"flux": [25.0, 41.0], "qwen-image": [7.0, 2.0], "one-2.1": [30.0]}}  # fmt: skip


# --- the independent count -----------------------------------------------------------------------------


def expected_counts(db: Database, since: datetime | None, key) -> dict:
    """Plain-Python rates per `key(job)` over finished jobs in the window, from every row of the table."""
    every_job = GenerationJobsRepository(db).list(limit=10_000)
    groups: dict = {}
    for j in every_job:
        if j.status not in ("succeeded", "failed") or (since is not None and j.finished_at < since):
            continue
        g = groups.setdefault(key(j), {n: [0, 0] for n in RATE_NAMES} | {"jobs": 0})
        g["jobs"] += 1
        ok = j.status == "succeeded"
        if (j.lora_model_id is not None or j.lora_candidate_id is not None
                or j.lora_skipped_reason in ("lora_route_failed", "lora_ignored", "lora_identity_mismatch",
                                             "lora_file_unreachable", "checksum_mismatch", "lora_file_invalid")):
            g["lora_usage_rate"][1] += 1
            g["lora_usage_rate"][0] += j.lora_model_id is not None
        if ok and j.face_count is not None:
            name = "face_match_rate_with_lora" if j.lora_model_id is not None else "face_match_rate_without_lora"
            g[name][1] += 1
            g[name][0] += j.face_match is True
        g["generation_success_rate"][1] += 1
        g["generation_success_rate"][0] += ok
        if j.lora_model_id is None:
            g["fallback_success_rate"][1] += 1
            g["fallback_success_rate"][0] += ok
    return groups


def _rate(pair: list[int]) -> float | None:
    return None if pair[1] == 0 else pair[0] / pair[1]


def _value(v):
    return None if v is None or v != v else v


def assert_table_matches(table: pd.DataFrame, key_columns: list[str], expected: dict, key_of_row) -> None:
    assert len(table) == len(expected), (table[key_columns].to_dict("records"), sorted(expected, key=str))
    for row in table.to_dict("records"):
        want = expected[key_of_row(row)]
        assert row["jobs"] == want["jobs"]
        for name in RATE_NAMES:
            assert _value(row[name]) == pytest.approx(_rate(want[name])), (key_of_row(row), name)


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Seeded:
    root = tmp_path_factory.mktemp("report")
    db = Database(f"sqlite:///{root / 'app.db'}")
    db.upgrade()
    info = seed(db)
    ctx = PipelineContext(settings=Settings(home=root), db=db, store=open_store(str(root / "objects")))
    yield Seeded(db, ctx, info["names"], info["minutes"])
    db.dispose()


@pytest.fixture(scope="module")
def full_report(seeded):
    return build_report(seeded.ctx, day=TODAY)


@pytest.fixture(scope="module")
def since_report(seeded, tmp_path_factory):
    # its own store, so it does not overwrite the full report's files for the same day
    store = open_store(str(tmp_path_factory.mktemp("since_objects")))
    ctx = PipelineContext(settings=seeded.ctx.settings, db=seeded.db, store=store)
    return build_report(ctx, day=TODAY, since=DAYS[1])


# --- numbers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["full_report", "since_report"])
def test_numbers_equal_an_independent_count(request, seeded, which) -> None:
    report = request.getfixturevalue(which)
    since = None if which == "full_report" else at(DAYS[1], 0)
    total = expected_counts(seeded.db, since, lambda j: "all")["all"]
    assert report.headline == pytest.approx({n: _rate(total[n]) for n in RATE_NAMES})
    assert report.summary.attrs["jobs"] == total["jobs"]
    summary = report.tables["summary"].set_index("metric")
    for name in RATE_NAMES:
        assert [summary.loc[name, "numerator"], summary.loc[name, "denominator"]] == total[name]

    assert_table_matches(report.tables["by_character"], ["character_id"],
                         expected_counts(seeded.db, since, lambda j: j.character_id), lambda r: r["character_id"])
    assert {r["character_id"]: r["character"] for r in report.tables["by_character"].to_dict("records")} == {
        cid: name for cid, name in seeded.character_names.items()
        if cid in expected_counts(seeded.db, since, lambda j: j.character_id)
    }  # fmt: skip
    assert_table_matches(report.tables["by_base_model"], ["base_model"],
                         expected_counts(seeded.db, since, lambda j: BASE_MODEL_OF[j.model]), lambda r: r["base_model"])
    assert_table_matches(report.tables["by_backend"], ["backend"],
                         expected_counts(seeded.db, since, lambda j: j.backend or "unknown"), lambda r: r["backend"])
    assert_table_matches(report.tables["by_day"], ["day"],
                         expected_counts(seeded.db, since, lambda j: j.finished_at.date().isoformat()),
                         lambda r: r["day"])  # fmt: skip


def test_since_keeps_only_jobs_finished_in_the_window(full_report, since_report) -> None:
    assert list(full_report.tables["by_day"]["day"]) == [d.isoformat() for d in DAYS]
    assert list(since_report.tables["by_day"]["day"]) == [d.isoformat() for d in DAYS[1:]]
    assert since_report.summary.attrs["jobs"] < full_report.summary.attrs["jobs"]
    assert since_report.since == at(DAYS[1], 0)


def test_training_outcomes_and_durations(full_report, since_report, seeded) -> None:
    training = full_report.tables["training"].set_index("base_model")
    assert training.loc["flux", ["ready", "failed", "training", "pending"]].tolist() == [2, 0, 0, 0]
    assert training.loc["qwen-image", ["ready", "failed"]].tolist() == [0, 2]
    assert training.loc["z-image-turbo", ["failed", "training", "pending"]].tolist() == [1, 1, 1]
    for base_model, minutes in seeded.training_minutes.items():
        assert training.loc[base_model, "finished_trainings"] == len(minutes)
        assert training.loc[base_model, "median_minutes"] == pytest.approx(statistics.median(minutes), abs=1e-6)
        if len(minutes) > 1:
            p90 = statistics.quantiles(minutes, n=10, method="inclusive")[8]
            assert training.loc[base_model, "p90_minutes"] == pytest.approx(p90, abs=1e-6)
    failures = full_report.tables["training_failures"]
    assert failures.to_dict("records") == [
        {"base_model": "qwen-image", "reason": "CUDA out of memory", "count": 2},
        {"base_model": "z-image-turbo", "reason": "only 2 usable photos", "count": 1},
    ]

    # since the second day: anna's flux (finished day 0), cleo's refusal and the old one-2.1 LoRA drop out;
    # LoRAs still pending or training count whatever the window
    windowed = since_report.tables["training"].set_index("base_model")
    assert "one-2.1" not in windowed.index
    assert windowed.loc["flux", ["ready", "finished_trainings", "median_minutes"]].tolist() == [1, 1, 41.0]
    assert windowed.loc["z-image-turbo", ["failed", "training", "pending"]].tolist() == [0, 1, 1]


def test_checks_are_computed_from_the_rates_without_an_instance(full_report) -> None:
    assert full_report.checks_source == "computed"
    checks = full_report.tables["checks"].set_index("check")
    targets = {"face_consistency": ("face_match_rate_with_lora", 0.95), "lora_usage_rate": ("lora_usage_rate", 0.90),
               "generation_success_rate": ("generation_success_rate", 0.95),
               "fallback_success": ("fallback_success_rate", 1.0)}  # fmt: skip
    for check, (rate, target) in targets.items():
        passed = full_report.headline[rate] >= target
        if check == "face_consistency":  # every character with scored LoRA generations must reach the target too
            by_character = full_report.tables["by_character"]
            passed = passed and all(r >= target for r in by_character["face_match_rate_with_lora"].dropna())
        assert checks.loc[check, "passed"] == passed, check
        assert checks.loc[check, "rate"] == pytest.approx(full_report.headline[rate])
    # seeded with ~85% success and some unmatched LoRA faces: these must fail
    assert not checks.loc["generation_success_rate", "passed"]
    assert not checks.loc["face_consistency", "passed"]


def test_job_counts_are_read_per_character_and_per_model_backend_day(seeded) -> None:
    """The SQL returns one row per character and one per (model, backend, day), never their product."""
    since = at(DAYS[1], 0)
    with seeded.db.engine.connect() as conn:
        data = read_report_data(conn, since)
    per_character = expected_counts(seeded.db, since, lambda j: j.character_id)
    per_slice = expected_counts(seeded.db, since, lambda j: (j.model, j.backend or "unknown",
                                                             j.finished_at.date().isoformat()))  # fmt: skip
    assert sorted(data.by_character["character_id"]) == sorted(per_character)
    assert len(data.by_slice) == len(per_slice)
    for row in data.by_slice.to_dict("records"):
        assert row["jobs"] == per_slice[(row["model"], row["backend"], row["day"])]["jobs"]
        assert row["base_model"] == BASE_MODEL_OF[row["model"]]


def test_pages_show_the_worst_characters_and_the_csv_keeps_all(seeded, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(report_tables, "SHOWN_CHARACTERS", 1)
    store = open_store(str(tmp_path / "objects"))
    report = build_report(PipelineContext(settings=seeded.ctx.settings, db=seeded.db, store=store), day=TODAY)
    counts = expected_counts(seeded.db, None, lambda j: j.character_id)
    # the independent worst: lowest face match with LoRA (characters without a LoRA have none and come last)
    measured = {cid: _rate(c["face_match_rate_with_lora"]) for cid, c in counts.items()
                if _rate(c["face_match_rate_with_lora"]) is not None}  # fmt: skip
    worst = min(measured, key=lambda cid: (measured[cid], cid))
    others = [cid for cid in counts if cid != worst]

    markdown = store.get_bytes(f"{report.prefix}/report.md").decode()
    section = markdown.split("## By character", 1)[1].split("## ", 1)[0]
    assert f"Worst 1 of {len(counts)} characters" in section and "every character is in by_character.csv" in section
    assert f"| {worst} | {seeded.character_names[worst]} |" in section
    assert not any(f"| {cid} | {seeded.character_names[cid]} |" in section for cid in others)
    page = store.get_bytes(f"{report.prefix}/report.html").decode()
    assert f"Worst 1 of {len(counts)} characters" in page
    csv = pd.read_csv(io.BytesIO(store.get_bytes(f"{report.prefix}/by_character.csv")))
    assert sorted(csv["character_id"]) == sorted(counts)


def _face_match_with_lora(db: Database) -> dict[int, tuple[int, int]]:
    """(matched, scored) of LoRA generations per character over all history, counted in Python."""
    counts = expected_counts(db, None, lambda j: j.character_id)
    return {cid: tuple(c["face_match_rate_with_lora"]) for cid, c in counts.items()
            if c["face_match_rate_with_lora"][1] > 0}  # fmt: skip


def check_face_match_by_character(db: Database) -> None:
    per_character = _face_match_with_lora(db)
    assert len(per_character) >= 2  # the seed gives Anna and Ben LoRA generations
    everyone = metrics.face_match_by_character(db, threshold=None, limit=100)
    assert everyone.count == len(per_character)
    assert {cid: (r.numerator, r.denominator) for cid, r in everyone.worst.items()} == per_character
    rates = [r.value for r in everyone.worst.values()]
    assert rates == sorted(rates)  # worst first

    # exactly at a character's rate is not below it; the same division as Rate.value on both sides
    cid, (matched, scored) = max(per_character.items(), key=lambda item: item[1][0] / item[1][1])
    at_best = metrics.face_match_by_character(db, threshold=matched / scored)
    assert cid not in at_best.worst
    assert at_best.count == sum(m / s < matched / scored for m, s in per_character.values())
    assert set(at_best.worst) == {c for c, (m, s) in per_character.items() if m / s < matched / scored}
    only_worst = metrics.face_match_by_character(db, threshold=1.0, limit=1)
    assert list(only_worst.worst) == [next(iter(everyone.worst))]
    assert only_worst.count == sum(m < s for m, s in per_character.values())


def test_face_match_by_character_returns_only_the_worst_below_the_threshold(seeded) -> None:
    check_face_match_by_character(seeded.db)
    default = metrics.face_match_by_character(seeded.db)
    assert default.threshold == metrics.TARGETS["face_consistency"]
    with pytest.raises(ValueError, match="threshold must be a fraction"):
        metrics.face_match_by_character(seeded.db, threshold=95)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        metrics.face_match_by_character(seeded.db, limit=0)


# --- files -----------------------------------------------------------------------------------------------


def test_files_are_written_under_the_day_prefix(full_report, seeded) -> None:
    store = seeded.ctx.store
    prefix = f"reports/{TODAY.isoformat()}"
    assert full_report.prefix == prefix
    listed = {info.key for info in store.list(prefix + "/")}
    assert set(full_report.keys) == listed
    names = {key.rsplit("/", 1)[1] for key in listed}
    assert {"report.md", "report.html", "trend.png", "face_match_by_character.png", "training_durations.png",
            "summary.csv", "by_character.csv", "by_base_model.csv", "by_backend.csv", "by_day.csv", "training.csv",
            "training_failures.csv", "checks.csv"} <= names  # fmt: skip

    for key in listed:
        if key.endswith(".png"):
            with Image.open(io.BytesIO(store.get_bytes(key))) as image:
                image.load()
                assert image.format == "PNG" and image.size == (800, 450)
    by_character = pd.read_csv(io.BytesIO(store.get_bytes(f"{prefix}/by_character.csv")))
    assert by_character["jobs"].tolist() == full_report.tables["by_character"]["jobs"].tolist()

    page = store.get_bytes(f"{prefix}/report.html").decode()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page
    markdown = store.get_bytes(f"{prefix}/report.md").decode()
    assert "![trend](trend.png)" in markdown
    success = full_report.headline["generation_success_rate"]
    assert f"| generation_success_rate | {int(full_report.summary.loc[3, 'numerator'])} |" in markdown
    assert f"{success:.1%}" in markdown and f"{success:.1%}" in page
    assert full_report.report_uri == store.uri(f"{prefix}/report.html")


def test_face_match_table_keeps_held_out_and_in_sample_apart_and_shows_both_recognisers(full_report, seeded) -> None:
    every = [j for j in GenerationJobsRepository(seeded.db).list(limit=10_000)
             if j.status == "succeeded" and j.face_count is not None]
    table = full_report.tables["face_match"]
    overall = table[table["character"] == "(all)"].set_index(["lora", "reference", "recogniser"])
    for lora, used in (("with", True), ("without", False)):
        jobs = [j for j in every if (j.lora_model_id is not None) == used]
        for reference, recogniser, column in (("held_out", "dlib", "face_match"), ("held_out", "sface", "sface_match"),
                                              ("in_sample", "dlib", "in_sample_face_match"),
                                              ("in_sample", "sface", "in_sample_sface_match")):
            scored = [j for j in jobs if getattr(j, column) is not None
                      and (reference == "in_sample" or j.face_reference == "held_out")]
            row = overall.loc[(lora, reference, recogniser)]
            assert (row["scored"], row["matched"]) == (len(scored), sum(getattr(j, column) is True for j in scored))
    both = [j for j in every if j.face_match is not None and j.sface_match is not None]
    disagree = overall.loc[("any", "scoring", "dlib≠sface")]
    assert (disagree["scored"], disagree["matched"]) == (len(both), sum(j.face_match != j.sface_match for j in both))
    markdown = seeded.ctx.store.get_bytes(f"{full_report.prefix}/report.md").decode()
    assert "## Face match: held-out vs in-sample photos, dlib vs SFace (never mixed)" in markdown
    assert "| (all) | with | held_out | sface |" in markdown


def test_plots_are_deterministic_and_rebuilding_overwrites(seeded, full_report) -> None:
    again = build_report(seeded.ctx, day=TODAY)
    assert again.plots == full_report.plots
    assert seeded.ctx.store.get_bytes(f"{again.prefix}/trend.png") == again.plots["trend"]


def test_dagster_metadata(full_report) -> None:
    import base64

    import dagster as dg

    from lora_pipelines.assets.report import report_metadata

    meta = report_metadata(full_report)
    assert isinstance(meta["summary"], dg.MarkdownMetadataValue)
    assert "| lora_usage_rate |" in meta["summary"].md_str
    table = meta["summary_table"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [r.data["metric"] for r in table.records] == RATE_NAMES
    assert isinstance(meta["report_uri"], dg.UrlMetadataValue) and meta["report_uri"].url.endswith("report.html")
    for name in ("trend", "face_match_by_character", "training_durations"):
        md = meta[f"plot_{name}"].md_str
        assert md.startswith(f"![{name}](data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(md.split(",", 1)[1].rstrip(")")))) as thumb:
            assert thumb.width <= 320 and thumb.height <= 180
    for name, value in full_report.headline.items():
        assert meta[name] == pytest.approx(value)
    dg.MaterializeResult(metadata=meta)  # accepted as-is


def test_bad_input_is_refused(seeded) -> None:
    with pytest.raises(ValueError, match="no timezone"):
        build_report(seeded.ctx, day=TODAY, since=datetime(2025, 1, 1))
    with pytest.raises(TypeError, match="since must be a date"):
        build_report(seeded.ctx, day=TODAY, since="2025-01-01")  # type: ignore[arg-type]


@pytest.mark.postgres
def test_same_numbers_on_postgresql(postgres_url, tmp_path) -> None:
    db = Database(postgres_url)
    db.upgrade()
    try:
        seed(db, jobs_count=30, rng_seed=7)
        ctx = PipelineContext(settings=Settings(home=tmp_path), db=db, store=open_store(str(tmp_path / "objects")))
        report = build_report(ctx, day=TODAY, since=DAYS[1])
        since = at(DAYS[1], 0)
        total = expected_counts(db, since, lambda j: "all")["all"]
        assert report.headline == pytest.approx({n: _rate(total[n]) for n in RATE_NAMES})
        assert_table_matches(report.tables["by_day"], ["day"],
                             expected_counts(db, since, lambda j: j.finished_at.date().isoformat()), lambda r: r["day"])
        assert report.tables["training"].set_index("base_model").loc["flux", "median_minutes"] == pytest.approx(41.0)
        assert_table_matches(report.tables["by_character"], ["character_id"],
                             expected_counts(db, since, lambda j: j.character_id), lambda r: r["character_id"])
        check_face_match_by_character(db)
    finally:
        db.dispose()


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_builds_the_report_and_prints_the_headline(lp_home) -> None:
    from lora_pipelines.cli import main

    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    chars, jobs = CharactersRepository(ctx.db), GenerationJobsRepository(ctx.db)
    dana = chars.create("Dana")
    outcomes = ["succeeded", "succeeded", "succeeded", "failed"]
    for i, status in enumerate(outcomes):
        (job_id,) = jobs.enqueue(dana.id, "flux", "p")
        jobs.claim(job_id, "w")
        jobs.finish(job_id, status, mode="standard", finished_at=at(DAYS[i % 2 + 1], 1) if i < 3 else at(DAYS[0], 1))
    ctx.db.dispose()

    result = CliRunner().invoke(main, ["report", "--since", DAYS[1].isoformat()])
    assert result.exit_code == 0, result.output
    html_line = next(line for line in result.output.splitlines() if line.startswith("report: "))
    assert html_line.endswith(f"reports/{TODAY.isoformat()}/report.html")
    path = lp_home / "objects" / "reports" / TODAY.isoformat()
    assert (path / "report.html").is_file() and (path / "report.md").is_file()
    assert f"markdown: {(path / 'report.md').resolve().as_uri()}" in result.output
    # since day 1 the one failure (day 0) is outside the window: 3/3 succeeded
    assert "3 finished jobs" in result.output
    assert "generation_success_rate        100.0%" in result.output
    assert "lora_usage_rate                n/a" in result.output

    everything = CliRunner().invoke(main, ["report"])
    assert everything.exit_code == 0 and "generation_success_rate        75.0%" in everything.output


@pytest.mark.parametrize(("since", "message"), [("2025-02-30", "is not a date"), ("yesterday", "is not a date"),
                                                ("2999-01-01", "is in the future")])  # fmt: skip
def test_cli_refuses_a_bad_since(lp_home, since, message) -> None:
    from lora_pipelines.cli import main

    result = CliRunner().invoke(main, ["report", "--since", since])
    assert result.exit_code == 2
    assert message in result.output and "--since" in result.output
