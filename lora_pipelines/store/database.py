"""`Database`: one engine + session factory for the app database, and its migrations.

SQLite (the embedded default) is shared by the Dagster process, sensors and the CLI, so it runs in WAL mode
with a busy timeout, foreign keys on, and write sessions that take the write lock up front (BEGIN IMMEDIATE):
a read-then-write transaction can then never lose a race to another writer.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from lora_pipelines.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "lora_pipelines_write"


def normalize_url(url: str) -> str:
    """Map plain `postgresql://` / `postgres://` URLs to the psycopg 3 driver."""
    if not url:
        raise ValueError("database URL is empty")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def display_url(url: str) -> str:
    """The URL with any password masked, for logs and CLI output."""
    return sa.make_url(url).render_as_string(hide_password=True)


class Database:
    """The app database at `url` (SQLAlchemy URL; `postgresql://` uses psycopg 3)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        parsed = sa.make_url(self.url)
        self.dialect_name = parsed.get_backend_name()
        engine_kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.dialect_name == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            else:
                engine_kwargs["poolclass"] = StaticPool  # one shared connection, or every session sees a new empty DB
            engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        self.engine = sa.create_engine(self.url, **engine_kwargs)
        if self.dialect_name == "sqlite":
            _configure_sqlite(self.engine)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        # a Database dropped without dispose() still closes its pooled connections
        weakref.finalize(self, self.engine.dispose)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Database:
        if settings is None:
            from lora_pipelines.settings import load_settings

            settings = load_settings()
        return cls(settings.resolved_database_url)

    def __repr__(self) -> str:
        return f"Database({display_url(self.url)!r})"

    @property
    def is_postgres(self) -> bool:
        return self.dialect_name == "postgresql"

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises."""
        factory = self._read_sessions if readonly else self._write_sessions
        with factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # --- migrations -------------------------------------------------------------------------------------

    def _alembic_config(self, connection: sa.Connection) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        return config

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply migrations up to `revision`; returns the revision the database is at afterwards."""
        from alembic import command

        with self._write_engine.begin() as connection:
            command.upgrade(self._alembic_config(connection), revision)
        return self.current_revision()

    def downgrade(self, revision: str) -> str | None:
        """Undo migrations down to `revision` (`base` removes every table)."""
        from alembic import command

        with self._write_engine.begin() as connection:
            command.downgrade(self._alembic_config(connection), revision)
        return self.current_revision()

    def current_revision(self) -> str | None:
        from alembic.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        return ScriptDirectory.from_config(config).get_current_head()

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control from pysqlite so BEGIN is ours (see the "begin" hook below)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
