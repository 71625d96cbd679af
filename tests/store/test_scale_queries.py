"""The hot queries use an index, not a Seq Scan, on the real PostgreSQL.

The queries are the ones the repositories and metrics really send (captured from the engine while the real
functions run), EXPLAINed with their parameters on a schema loaded like benchmarks/scale.py (3,000 characters,
30,000 jobs) and ANALYZEd.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from conftest import REPO_ROOT, TEST_DATABASE_URL, _postgres_url_or_fail
from lora_pipelines.planning.training import CharacterCursor
from lora_pipelines.reporting import metrics
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database, normalize_url
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository

pytestmark = pytest.mark.postgres

CHARACTERS = 3_000


def _load_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("scale_benchmark", REPO_ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> Any:
    return _load_benchmark()


@pytest.fixture(scope="module")
def loaded(bench) -> Iterator[tuple[Database, Any]]:
    """A fresh schema, migrated, loaded with the benchmark's data set, with the benchmark's new changes on top."""
    _postgres_url_or_fail()
    admin = sa.create_engine(normalize_url(TEST_DATABASE_URL))
    schema = f"t_scale_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    db = Database(bench.schema_url(TEST_DATABASE_URL, schema))
    try:
        db.upgrade()
        bench.load(db, CHARACTERS)
        scenario = bench.add_new_changes(db)
        bench.vacuum_analyze(db.engine)
        yield db, scenario
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def captured(db: Database, action: Callable[[], Any], table: str) -> list[tuple[str, Any]]:
    """The SELECTs on `table` that `action` sends through the engine, with their parameters."""
    statements: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert statements, f"the action sent no SELECT on {table}"
    return statements


def plan_nodes(conn: sa.Connection, statement: str, parameters: Any) -> list[dict[str, Any]]:
    """Every node of the EXPLAIN plan, flattened."""
    explained = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
    nodes, stack = [], [explained[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def scans(nodes: list[dict[str, Any]], table: str) -> list[tuple[str, str | None]]:
    """(node type, index name) of each node that reads `table` (bitmap index scans name only the index)."""
    found = []
    for node in nodes:
        if node.get("Relation Name") == table or str(node.get("Index Name", "")).startswith(f"ix_{table}_"):
            found.append((node["Node Type"], node.get("Index Name")))
    return found


HOT_QUERIES: dict[str, tuple[str, str, Callable[[Database, Any], Any]]] = {
    # name: (table, index that must serve it, the real call)
    "new_characters tick": ("characters", "ix_characters_updated_at_id",
                            lambda db, s: CharactersRepository(db).changed_since(
                                s.character_cursor.updated_at, s.character_cursor.id, limit=500)),
    "new_characters first tick": ("characters", "ix_characters_updated_at_id",
                                  lambda db, s: CharactersRepository(db).changed_since(
                                      CharacterCursor().updated_at, 0, limit=500)),
    "training_completion tick": ("lora_models", "ix_lora_models_status_id",
                                 lambda db, s: LoraModelsRepository(db).list_by_status("training", limit=50)),
    "LoRA lookup": ("lora_models", "ix_lora_models_character_id_base_model_status_id",
                    lambda db, s: LoraModelsRepository(db).find_by_character_id(s.character_ids[0])),
    "pending_generations tick": ("generation_jobs", "ix_generation_jobs_status_id",
                                 lambda db, s: GenerationJobsRepository(db).pending_after(s.pending_cursor, 160)),
    "orphaned pending jobs": ("generation_jobs", "ix_generation_jobs_status_id",
                              lambda db, s: GenerationJobsRepository(db).list(status="pending", limit=160)),
    "reaper (requeue_stale)": ("generation_jobs", "ix_generation_jobs_status_id",
                               lambda db, s: GenerationJobsRepository(db).requeue_stale(timedelta(minutes=30))),
    "face match by character, 24 h": ("generation_jobs", "ix_generation_jobs_finished_at",
                                      lambda db, s: metrics.face_match_by_character(db, hours=24)),
    "LoRA usage rate, 24 h": ("generation_jobs", "ix_generation_jobs_finished_at",
                              lambda db, s: metrics.lora_usage_rate(db, hours=24)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(HOT_QUERIES))
def test_hot_query_uses_its_index(loaded, name: str) -> None:
    db, scenario = loaded
    table, index, call = HOT_QUERIES[name]

    statements = captured(db, lambda: call(db, scenario), table)

    with db.engine.connect() as conn:
        for statement, parameters in statements:
            if name.startswith("LoRA usage") and "ORDER BY" in statement:
                continue  # the offender list walks the primary key backwards; only the counts need the window index
            reads = scans(plan_nodes(conn, statement, parameters), table)
            assert ("Seq Scan", None) not in reads, f"{name}: Seq Scan on {table}\n{statement}"
            assert index in {idx for _, idx in reads}, f"{name}: {index} not used ({reads})\n{statement}"


def test_without_the_window_index_the_metrics_scan_the_table(loaded) -> None:
    """The check above can fail: drop the index (rolled back) and the same query reads the whole table."""
    db, _ = loaded
    statement, parameters = captured(db, lambda: metrics.face_match_by_character(db, hours=24), "generation_jobs")[0]

    with db.engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.exec_driver_sql("DROP INDEX ix_generation_jobs_finished_at")
            reads = scans(plan_nodes(conn, statement, parameters), "generation_jobs")
        finally:
            transaction.rollback()

    assert ("Seq Scan", None) in reads
