"""Migrations: up, down, up again on SQLite and PostgreSQL; the migrated schema is exactly tables.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

from lora_pipelines.cli import main
from lora_pipelines.store.database import Database, normalize_url
from lora_pipelines.store.tables import Base

HEAD = "0005"  # the newest revision: 0003 → 0006 (LoRA expert pair) → 0004 (character management) → 0005 (lifecycle)

APP_TABLES = {"characters", "lora_models", "generation_jobs", "training_states", "lora_activations",
              "generation_feedback"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    yield db
    db.dispose()


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def _schema_diffs(db: Database, metadata: sa.MetaData) -> list:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def test_upgrade_downgrade_upgrade(database: Database) -> None:
    assert database.current_revision() is None

    assert database.upgrade() == database.head_revision() == HEAD
    assert APP_TABLES <= _tables(database)
    assert database.downgrade("base") is None
    assert _tables(database) & APP_TABLES == set()
    assert database.upgrade() == HEAD
    assert database.upgrade() == HEAD  # idempotent


def test_migrated_schema_matches_tables_py(database: Database) -> None:
    database.upgrade()
    assert _schema_diffs(database, Base.metadata) == []

    # the comparison itself can fail: a column tables.py would add is reported
    extended = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(extended)
    extended.tables["characters"].append_column(sa.Column("nickname", sa.String(50)))
    assert [d[0] for d in _schema_diffs(database, extended)] == ["add_column"]


def test_sqlite_pragmas_for_sharing_one_file(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'nested' / 'app.db'}")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    db.dispose()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert normalize_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert "secret" not in repr(Database("postgresql://user:secret@127.0.0.1:1/db"))


def test_cli_upgrade_and_downgrade_on_the_default_sqlite(lp_home) -> None:
    runner = CliRunner()

    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"revision {HEAD}" in result.output
    db = Database(f"sqlite:///{lp_home / 'app.db'}")
    assert APP_TABLES <= _tables(db)

    result = runner.invoke(main, ["db", "downgrade", "--revision", "base"])
    assert result.exit_code == 0, result.output
    assert "revision base" in result.output
    assert _tables(db) & APP_TABLES == set()
    assert runner.invoke(main, ["db", "downgrade"]).exit_code != 0  # --revision is required
    db.dispose()


def test_cli_upgrade_uses_the_database_url(postgres_url, monkeypatch, lp_home) -> None:
    monkeypatch.setenv("LORA_PIPELINES_DATABASE_URL", postgres_url)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    db = Database(postgres_url)
    assert db.current_revision() == HEAD and APP_TABLES <= _tables(db)
    assert not (lp_home / "app.db").exists()
    db.dispose()
