"""Rows out as frozen records, and the one locked update every repository write goes through.

`update_locked` locks the row (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite write transactions already hold
the database write lock from BEGIN IMMEDIATE), checks a status move against the table's forward-only rules,
and writes the fields, all in one transaction: concurrent updates never lose a write, and a refused move
(`IllegalStatusTransition`) changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from lora_pipelines.store.database import Database
from lora_pipelines.store.tables import utcnow

R = TypeVar("R")
Changes = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]]


class RecordNotFoundError(LookupError):
    """The row an update (or a new row's foreign key) names does not exist."""


@dataclass(frozen=True)
class Table(Generic[R]):
    """What the shared update needs to know about one table."""

    name: str
    row: type[Any]  # the ORM class
    record: type[R]  # the frozen record handed out
    check_transition: Callable[[int, str, str], None] | None = None  # raises IllegalStatusTransition
    stamps: Mapping[str, str] = field(default_factory=dict)  # status -> time column set when a row enters it


def to_record(cls: type[R], row: Any) -> R:
    return cls(**{f.name: copy.deepcopy(getattr(row, f.name)) for f in fields(cls)})  # type: ignore[arg-type]


def lock_row(session: Session, table: Table[Any], row_id: int) -> Any:
    # FOR UPDATE on PostgreSQL; on SQLite the write transaction already holds the database lock
    stmt = sa.select(table.row).where(table.row.id == row_id).with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise RecordNotFoundError(f"{table.name} {row_id} does not exist")
    return row


def apply(
    table: Table[Any],
    row: Any,
    changes: Changes,
    status: str | None = None,
    *,
    check: Callable[[int, str, str], None] | None = None,
) -> None:
    """Check the move to `status` (with `check`, else the table's rule), then write it and `changes` (a mapping,
    or a function of the locked row returning one: a read-modify-write) to a locked row.

    Entering a new status stamps its time column (`Table.stamps`) unless `changes` sets it.
    """
    if status is not None:
        rule = check or table.check_transition
        if rule is None:
            raise ValueError(f"{table.name} has no status")
        rule(row.id, row.status, status)
    values = dict(changes(row) if callable(changes) else changes)
    if status is not None:
        if status != row.status and status in table.stamps:
            values.setdefault(table.stamps[status], utcnow())
        values["status"] = status
    for name, value in values.items():
        setattr(row, name, copy.deepcopy(value))
    row.updated_at = utcnow()


def update_locked(db: Database, table: Table[R], row_id: int, changes: Changes, status: str | None = None) -> R:
    """Lock the row, `apply` the change, and return the updated record, in one transaction."""
    with db.session() as session:
        row = lock_row(session, table, row_id)
        apply(table, row, changes, status)
        session.flush()
        return to_record(table.record, row)
