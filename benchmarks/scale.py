"""How the database work of sensors, LoRA selection and metrics grows from 10k to 100k characters.

    .venv/bin/python benchmarks/scale.py [--sizes 10000,100000] [--keep]

For each size N it creates a fresh schema in TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test),
runs the migrations, bulk-loads with INSERT ... SELECT FROM generate_series:

- N characters (70% loraEnabled; most with 6 photo keys), created over the last 30 days;
- 2 lora_models per LoRA-enabled character (flux + z-image-turbo; 95% ready, 5% failed; the newest
  characters' ~14 rows in training: in-flight work is bounded by GPUs, not by the table);
- 10*N generation_jobs, finished over the last 30 days (97% succeeded with face scores), plus 200 pending and
  100 running (queue depth is bounded by throughput, not by history);

then VACUUM ANALYZE, and adds what a sensor sees between two ticks: 50 new characters and 100 new pending jobs.

Each operation calls the project's own functions (planning, services.reaper, reporting.metrics, reporting.report,
services.lora_lookup). LoRA selection measures the database part only: lora_lookup.inspect_stored_lora (file
download + header) is replaced by `InspectOutcome.success(candidate.base_model)`.

Baseline, same run and data: the index(es) serving the operation are dropped, the operation measured again, and
the indexes recreated from their pg_indexes definitions. (Not DROP INDEX inside a rolled-back transaction: the
repositories use their own pooled connections, which that transaction's lock would block.)

Times are medians of several calls, in milliseconds. The schema is dropped at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from lora_pipelines.domain.lora_selection import InspectOutcome
from lora_pipelines.planning.generation import plan_pending_generations
from lora_pipelines.planning.training import CharacterCursor, plan_new_character_training, plan_training_completion
from lora_pipelines.reporting import metrics
from lora_pipelines.services import lora_lookup
from lora_pipelines.services.reaper import requeue_stale_generations
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database, normalize_url
from lora_pipelines.store.generation_jobs import GenerationJobsRepository

try:  # the report is optional: without it the benchmark measures metrics.headline only
    from lora_pipelines.reporting import queries, report
except ImportError:  # pragma: no cover - depends on what is installed
    queries = report = None

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
MAX_SIZE = 1_000_000
BASE_MODELS = ["flux", "z-image-turbo"]
MIN_PHOTOS = 5
NEW_CHARACTERS = 50
NEW_PENDING_JOBS = 100
SELECTIONS = 200

# --- bulk load -------------------------------------------------------------------------------------------

LOAD_CHARACTERS = """
INSERT INTO characters (id, name, lora_enabled, trigger_word, photo_keys, created_at, updated_at)
SELECT g, 'character ' || g, g % 10 < 7, 'ohwx_character_' || g,
       (SELECT json_agg('characters/' || g || '/photos/' || p || '.jpg')
          FROM generate_series(1, CASE WHEN g % 13 = 0 THEN 2 ELSE 6 END) p),
       t, LEAST(t + (g % 7) * interval '1 hour', now() - interval '10 minutes')
FROM generate_series(1, :n) g
CROSS JOIN LATERAL (SELECT now() - interval '30 days' + interval '719 hours' * (g::float8 / :n) AS t) ts
"""

LOAD_LORA_MODELS = """
INSERT INTO lora_models (character_id, status, base_model, trigger_word, training_model, job_id, model_path, sha256,
                         size_bytes, gpu_call_id, backend, dataset_hash, idempotency_key, attempt, error,
                         training_started_at, finished_at, created_at, updated_at)
SELECT c.id, s.status, b.base, c.trigger_word, 'ai-toolkit', 'job-' || c.id || '-' || b.k,
       'loras/' || b.base || '-character-' || c.id || '/job-' || c.id || '-' || b.k || '.safetensors',
       md5(c.id || b.base) || md5(b.base || c.id), 150000000, 'fc-' || c.id || '-' || b.k, 'modal',
       md5(c.id::text), 'train:' || c.id || ':' || b.base, 1,
       CASE WHEN s.status = 'failed' THEN 'CUDA out of memory' END,
       c.created_at + interval '5 minutes',
       CASE WHEN s.status <> 'training' THEN c.created_at + interval '50 minutes' END,
       c.created_at,
       CASE WHEN s.status <> 'training' THEN c.created_at + interval '50 minutes' ELSE c.created_at END
FROM characters c
CROSS JOIN (VALUES (1, 'flux'), (2, 'z-image-turbo')) AS b(k, base)
CROSS JOIN LATERAL (
    SELECT CASE WHEN c.id > :n - 10 THEN 'training' WHEN (c.id * 7 + b.k) % 20 = 0 THEN 'failed' ELSE 'ready' END
) AS s(status)
WHERE c.lora_enabled
ORDER BY c.id, b.k
"""

# jobs 1..m-300 finished (time grows with id), then 100 running (fresh), then 200 pending
LOAD_GENERATION_JOBS = """
INSERT INTO generation_jobs (id, character_id, model, prompt, status, sent_prompt, lora_model_id, trigger_word,
                             lora_skipped_reason, mode, backend, input_metadata, output_keys, face_distance,
                             face_match, face_count, error, attempts, claimed_by, started_at, finished_at,
                             created_at, updated_at)
SELECT g, x.cid, CASE WHEN g % 5 = 0 THEN 'z-image-turbo' ELSE 'flux' END, 'a portrait in a cafe', x.status,
       CASE WHEN y.lora THEN 'ohwx_character_' || x.cid || ', a portrait in a cafe'
            WHEN y.finished THEN 'a portrait in a cafe' END,
       CASE WHEN y.lora THEN x.cid * 2 END,
       CASE WHEN y.lora THEN 'ohwx_character_' || x.cid END,
       CASE WHEN y.finished AND NOT y.lora THEN
            CASE WHEN x.cid % 10 < 7 THEN 'lora_route_failed' ELSE 'lora_disabled' END END,
       CASE WHEN y.lora THEN 'lora' WHEN y.finished AND g % 4 = 0 THEN 'standard' WHEN y.finished THEN 'face_swap' END,
       CASE WHEN y.finished THEN 'modal' END,
       '{}'::json,
       CASE WHEN x.status = 'succeeded' THEN json_build_array('generations/' || g || '/0.png') ELSE '[]'::json END,
       CASE WHEN x.status = 'succeeded' THEN y.distance END,
       CASE WHEN x.status = 'succeeded' THEN y.distance < 0.6 END,
       CASE WHEN x.status = 'succeeded' THEN 1 END,
       CASE WHEN x.status = 'failed' THEN 'GPU endpoint returned 502' END,
       CASE WHEN x.status = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN x.status <> 'pending' THEN 'worker-' || g % 4 END,
       CASE WHEN x.status = 'running' THEN now() - interval '5 minutes'
            WHEN y.finished THEN x.t - interval '40 seconds' END,
       CASE WHEN y.finished THEN x.t END,
       x.t - interval '60 seconds', x.t
FROM generate_series(1, :m) g
CROSS JOIN LATERAL (
    SELECT 1 + (g::bigint * 7919) % :n AS cid,
           now() - interval '2 minutes' - interval '30 days' * (1 - g::float8 / :m) AS t,
           CASE WHEN g > :m - 200 THEN 'pending' WHEN g > :m - 300 THEN 'running'
                WHEN g % 33 = 0 THEN 'failed' ELSE 'succeeded' END AS status
) x
CROSS JOIN LATERAL (
    SELECT x.status IN ('succeeded', 'failed') AS finished,
           x.status IN ('succeeded', 'failed') AND x.cid % 10 < 7 AND g % 12 <> 0 AS lora,
           CASE WHEN x.cid % 10 < 7 AND g % 12 <> 0 THEN 0.25 ELSE 0.5 END + ((g * 37) % 50) / 100.0 AS distance
) y
"""

SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = current_schema()
  AND i.indexname NOT IN (SELECT conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace)
"""


def secondary_indexes(engine: sa.Engine) -> dict[str, str]:
    """Plain (non-constraint) indexes of the schema: name → CREATE INDEX statement."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(SECONDARY_INDEXES)).all())


@contextmanager
def indexes_dropped(engine: sa.Engine, names: list[str]) -> Iterator[dict[str, float]]:
    """Drop `names`, run the block, recreate them; yields the seconds each CREATE INDEX took (filled on exit)."""
    defs = secondary_indexes(engine)
    missing = [n for n in names if n not in defs]
    if missing:
        raise RuntimeError(f"no index named {', '.join(missing)} in the schema; have {', '.join(sorted(defs))}")
    build_seconds: dict[str, float] = {}
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
    try:
        yield build_seconds
    finally:
        for name in names:
            start = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(sa.text(defs[name]))
            build_seconds[name] = time.perf_counter() - start
        vacuum_analyze(engine)


def vacuum_analyze(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("characters", "lora_models", "generation_jobs"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def load(db: Database, n: int) -> dict[str, int]:
    """Bulk-load the data set for `n` characters with secondary indexes dropped, then rebuild them."""
    with indexes_dropped(db.engine, list(secondary_indexes(db.engine))):
        with db.engine.begin() as conn:
            conn.execute(sa.text(LOAD_CHARACTERS), {"n": n})
            conn.execute(sa.text(LOAD_LORA_MODELS), {"n": n})
            conn.execute(sa.text(LOAD_GENERATION_JOBS), {"n": n, "m": 10 * n})
            for table in ("characters", "lora_models", "generation_jobs"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"))
    with db.engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("characters", "lora_models", "generation_jobs")
        }


# --- the data a sensor sees between two ticks ------------------------------------------------------------


@dataclass
class Scenario:
    character_cursor: CharacterCursor
    pending_cursor: int
    character_ids: list[int]


def add_new_changes(db: Database) -> Scenario:
    """Cursors at the end of the loaded data, then 50 new characters and 100 new pending jobs after them."""
    with db.engine.connect() as conn:
        updated_at, last_id = conn.execute(
            sa.text("SELECT updated_at, id FROM characters ORDER BY updated_at DESC, id DESC LIMIT 1")
        ).one()
        last_job = conn.execute(sa.text("SELECT max(id) FROM generation_jobs")).scalar_one()
        n = conn.execute(sa.text("SELECT max(id) FROM characters")).scalar_one()
    characters = CharactersRepository(db)
    new_ids = [
        characters.create(f"new character {i}", lora_enabled=True,
                          photo_keys=[f"characters/new-{i}/photos/{p}.jpg" for p in range(6)]).id
        for i in range(NEW_CHARACTERS)
    ]  # fmt: skip
    GenerationJobsRepository(db).enqueue(new_ids[0], "flux", "a portrait in a cafe", count=NEW_PENDING_JOBS)
    rng = random.Random(n)
    return Scenario(CharacterCursor(updated_at.astimezone(UTC), last_id), last_job,
                    [rng.randint(1, n) for _ in range(SELECTIONS)])


# --- operations ------------------------------------------------------------------------------------------


@dataclass
class Operation:
    name: str
    run: Callable[[Database, Scenario], Any]
    indexes: list[str]  # what serves it; dropped for the baseline
    repeat: int = 7
    per_call: bool = False  # run() returns a list of per-call seconds itself
    warm_up: bool = True


def _running(_call_id: str) -> SimpleNamespace:
    return SimpleNamespace(state="running")


def _select_loras(db: Database, scenario: Scenario) -> list[float]:
    """get_lora_for_generation for each sampled character, the file check replaced (DB part only)."""
    ctx = SimpleNamespace(db=db)
    flux = "flux"
    real_inspect = lora_lookup.inspect_stored_lora
    lora_lookup.inspect_stored_lora = lambda _ctx, candidate: InspectOutcome.success(candidate.base_model)
    try:
        seconds = []
        for character_id in scenario.character_ids:
            start = time.perf_counter()
            lora_lookup.get_lora_for_generation(ctx, character_id, flux)  # type: ignore[arg-type]
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        lora_lookup.inspect_stored_lora = real_inspect


def _pending_generations_tick(db: Database, after_id: int) -> tuple[list, int]:
    """The database work of a pending_generations tick: the reaper's requeue, then the planning."""
    return plan_pending_generations(db, after_id, requeued=requeue_stale_generations(db))


def _report_sql(db: Database, hours: float) -> tuple[int, int]:
    """build_report's database work (queries.read_report_data), without plots and uploads; returns the rows of its
    two job-count queries (per character, per model x backend x day)."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    with db.engine.connect() as conn:
        data = queries.read_report_data(conn, since)
    return len(data.by_character), len(data.by_slice)


def _report_sql_before(db: Database, hours: float) -> tuple[int]:
    """Baseline, build_report's database work before the job counts were split: one GROUP BY character x model x
    backend x day, every character's name, the same LoRA training queries."""
    import pandas as pd

    since = datetime.now(UTC) - timedelta(hours=hours)
    J = queries.J
    with db.engine.connect() as conn:
        day, day_text = queries._day(conn, J.finished_at)
        stmt = (
            sa.select(J.character_id, J.model, J.backend, day_text.label("day"), *queries._job_sums())
            .where(*queries._finished_in(since))
            .group_by(J.character_id, J.model, J.backend, day)
        )
        jobs = pd.read_sql(stmt, conn)
        pd.read_sql(sa.select(queries.C.id.label("character_id"), queries.C.name.label("character")), conn)
        queries._training_status(conn, since)
        queries._training_durations(conn, since)
        queries._failure_reasons(conn, since)
    return (len(jobs),)


def _report_end_to_end(db: Database, hours: float) -> None:
    """build_report itself: queries, tables, plots, CSV/Markdown/HTML written to a local object store."""
    import tempfile

    from lora_pipelines.services.context import PipelineContext
    from lora_pipelines.settings import Settings
    from lora_pipelines.store.objects import open_store

    since = datetime.now(UTC) - timedelta(hours=hours)
    with tempfile.TemporaryDirectory() as home:
        ctx = PipelineContext(settings=Settings(home=home), db=db, store=open_store(os.path.join(home, "objects")))
        report.build_report(ctx, day=datetime.now(UTC).date(), since=since)


def operations(new_indexes: bool) -> list[Operation]:
    chars = ["ix_characters_updated_at_id"]
    lora_status = ["ix_lora_models_status_id"]
    lora_character = ["ix_lora_models_character_id_base_model_status_id"]
    job_status = ["ix_generation_jobs_status_id"]
    finished = ["ix_generation_jobs_finished_at"] if new_indexes else []
    # a 30-day window is the whole table: no index can shorten it, so those get no baseline
    ops = [
        Operation("new_characters tick (50 new after cursor)", lambda db, s: plan_new_character_training(
            db, s.character_cursor, base_models=BASE_MODELS, min_photos=MIN_PHOTOS), chars),
        Operation("new_characters first tick (no cursor, 500)", lambda db, s: plan_new_character_training(
            db, CharacterCursor(), base_models=BASE_MODELS, min_photos=MIN_PHOTOS), chars),
        Operation("training_completion tick (page of 50)", lambda db, s: plan_training_completion(
            db, _running, after_id=0, limit=50), lora_status),
        Operation("pending_generations tick (100 new after cursor)", lambda db, s: _pending_generations_tick(
            db, s.pending_cursor), job_status),
        Operation("pending_generations first tick (cursor 0)", lambda db, s: _pending_generations_tick(db, 0),
                  job_status),
        Operation("LoRA selection, DB part (median of 200)", _select_loras, lora_character, repeat=1, per_call=True),
        Operation("metrics.headline, last 24 h", lambda db, s: metrics.headline(db, hours=24), finished, repeat=3),
        Operation("metrics.headline, last 30 days", lambda db, s: metrics.headline(db, hours=24 * 30), [],
                  repeat=3),
        Operation("face_match_by_character, last 24 h", lambda db, s: metrics.face_match_by_character(db, hours=24),
                  finished, repeat=3),
        Operation("face_match_by_character, 30 days",
                  lambda db, s: metrics.face_match_by_character(db, hours=24 * 30), [], repeat=3),
    ]
    if report is not None:
        ops += [
            Operation("report SQL (build_report queries), 24 h", lambda db, s: _report_sql(db, 24), finished,
                      repeat=3),
            Operation("report SQL (build_report queries), 30 d", lambda db, s: _report_sql(db, 24 * 30), [],
                      repeat=1, warm_up=False),
            Operation("(before) report SQL, 1 GROUP BY + all names, 24 h",
                      lambda db, s: _report_sql_before(db, 24), finished, repeat=3),
            Operation("(before) report SQL, 1 GROUP BY + all names, 30 d",
                      lambda db, s: _report_sql_before(db, 24 * 30), [], repeat=1, warm_up=False),
            Operation("build_report end to end (plots, files), 30 d", lambda db, s: _report_end_to_end(db, 24 * 30),
                      [], repeat=1, warm_up=False),
        ]
    return ops


def measure(op: Operation, db: Database, scenario: Scenario) -> tuple[float, Any]:
    """Median seconds of one call (after one warm-up call), and what the last call returned."""
    if op.warm_up:
        op.run(db, scenario)
    if op.per_call:
        return statistics.median(op.run(db, scenario)), None
    seconds, value = [], None
    for _ in range(op.repeat):
        start = time.perf_counter()
        value = op.run(db, scenario)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), value


# --- one size --------------------------------------------------------------------------------------------


@dataclass
class SizeResult:
    n: int
    rows: dict[str, int]
    load_seconds: float
    with_index: dict[str, float] = field(default_factory=dict)
    without_index: dict[str, float] = field(default_factory=dict)
    index_build_seconds: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    report_rows: dict[str, tuple[int, ...]] = field(default_factory=dict)


def schema_url(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_size(base_url: str, n: int, keep: bool) -> SizeResult:
    schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(base_url))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    db = Database(schema_url(base_url, schema))
    try:
        db.upgrade()
        new_indexes = "ix_generation_jobs_finished_at" in secondary_indexes(db.engine)
        log(f"[{n}] loading into schema {schema} (migrations at {db.current_revision()}) ...")
        start = time.perf_counter()
        rows = load(db, n)
        result = SizeResult(n, rows, time.perf_counter() - start)
        scenario = add_new_changes(db)
        vacuum_analyze(db.engine)
        log(f"[{n}] loaded {rows} in {result.load_seconds:.1f} s")
        ops = operations(new_indexes)
        for op in ops:
            result.with_index[op.name], value = measure(op, db, scenario)
            result.dropped[op.name] = op.indexes
            if op.name.startswith(("report SQL", "(before) report SQL")):
                result.report_rows[op.name] = value
            log(f"[{n}] {op.name}: {result.with_index[op.name] * 1000:.2f} ms")
        by_indexes: dict[tuple[str, ...], list[Operation]] = {}
        for op in ops:
            if op.indexes:
                by_indexes.setdefault(tuple(op.indexes), []).append(op)
        for names, group in by_indexes.items():
            with indexes_dropped(db.engine, list(names)) as build_seconds:
                for op in group:
                    result.without_index[op.name] = measure(op, db, scenario)[0]
                    log(f"[{n}] {op.name} without {', '.join(names)}: {result.without_index[op.name] * 1000:.2f} ms")
            result.index_build_seconds.update(build_seconds)
        return result
    finally:
        db.dispose()
        if not keep:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        else:
            log(f"kept schema {schema}")
        admin.dispose()


# --- output ----------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:,.1f}x"


def _label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def print_table(results: list[SizeResult]) -> None:
    first, last = results[0], results[-1]
    a, b = _label(first.n), _label(last.n)
    print()
    for r in results:
        rows = ", ".join(f"{table} {count:,}" for table, count in r.rows.items())
        print(f"N={r.n:,}: {rows}; loaded + indexed in {r.load_seconds:.1f} s")
    print()
    header = ["operation (ms, median)", a, b, f"{b}/{a}", f"no index {a}", f"no index {b}", f"{b}/{a}",
              f"index gain @{b}"]  # fmt: skip
    table = [header]
    for name in first.with_index:
        on_a, on_b = first.with_index[name], last.with_index[name]
        off_a, off_b = first.without_index.get(name), last.without_index.get(name)
        table.append([name, _ms(on_a), _ms(on_b), _ratio(on_b, on_a), _ms(off_a), _ms(off_b), _ratio(off_b, off_a),
                      _ratio(off_b, on_b)])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print("Indexes dropped for the 'no index' columns:")
    for name, names in last.dropped.items():
        print(f"  {name}: {', '.join(names) if names else '(none: the window is the whole table)'}")
    print(f"Index build time at N={last.n:,}: " + ", ".join(
        f"{name} {seconds:.2f} s" for name, seconds in sorted(last.index_build_seconds.items())))
    if last.report_rows:
        print(f"Rows the report's job-count queries return at N={last.n:,}:")
        for name, rows in last.report_rows.items():
            print(f"  {name}: " + " + ".join(f"{count:,}" for count in rows))
    print("LoRA selection measures the DB part: the file check (download + safetensors header) is replaced by "
          "InspectOutcome.success(candidate.base_model).")


def parse_sizes(raw: str) -> list[int]:
    try:
        sizes = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes comma-separated integers, got {raw!r}") from None
    if not sizes or any(not 100 <= s <= MAX_SIZE for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes must be between 100 and {MAX_SIZE:,} characters, got {raw!r}")
    return sorted(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000],
                        help="characters per run, comma-separated (jobs = 10x); default 10000,100000")
    parser.add_argument("--url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_URL),
                        help="PostgreSQL server (a fresh schema is created and dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the schemas for inspection")
    args = parser.parse_args()
    if not args.url.startswith(("postgresql", "postgres:")):
        parser.error("the scale benchmark needs PostgreSQL")
    started = time.perf_counter()
    results = [run_size(args.url, n, args.keep) for n in args.sizes]
    print_table(results)
    print(f"Total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
