"""The `lora_activations` repository: which ready LoRA generation uses per character and base model, with who,
when and why (rules in domain/lora_versions.py).

An activation and the quality gate's decision run in one transaction holding the character's row lock, so two
LoRAs becoming ready at once, or a gate racing a `lora activate`, are decided one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from lora_pipelines.domain.lora_versions import GATE_TOLERANCE, GateDecision, Version, active_version, gate
from lora_pipelines.store.characters import CHARACTERS
from lora_pipelines.store.database import Database
from lora_pipelines.store.lora_models import LORA_MODELS, LoraModel
from lora_pipelines.store.rows import RecordNotFoundError, apply, lock_row, to_record
from lora_pipelines.store.tables import ACTIVATION_KINDS, GenerationJobRow, LoraActivationRow, LoraModelRow, utcnow
from lora_pipelines.store.validation import check_short_text, check_text

GATE_ACTOR = "quality gate"


class NotActivatable(ValueError):
    """The LoRA cannot be made the one in use (not ready)."""


@dataclass(frozen=True)
class LoraActivation:
    id: int
    character_id: int
    base_model: str
    lora_model_id: int
    previous_lora_model_id: int | None
    kind: str
    activated_by: str
    reason: str
    created_at: datetime


def _version(row: LoraModelRow) -> Version:
    return Version(row.id, row.finished_at, row.validation_score)


class LoraActivationsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- reads ---
    def latest(self, character_id: int, base_model: str) -> LoraActivation | None:
        with self.db.session(readonly=True) as session:
            row = self._latest(session, character_id, base_model)
            return None if row is None else to_record(LoraActivation, row)

    def history(self, character_id: int, base_model: str | None = None, limit: int = 100) -> list[LoraActivation]:
        """Newest first."""
        stmt = sa.select(LoraActivationRow).where(LoraActivationRow.character_id == character_id)
        if base_model is not None:
            stmt = stmt.where(LoraActivationRow.base_model == base_model)
        with self.db.session(readonly=True) as session:
            rows = session.scalars(stmt.order_by(LoraActivationRow.id.desc()).limit(limit))
            return [to_record(LoraActivation, r) for r in rows]

    def active_id(self, character_id: int, base_model: str) -> int | None:
        """The id of the ready LoRA generation uses for this character and base model (None: no ready LoRA)."""
        with self.db.session(readonly=True) as session:
            active = self._active(session, character_id, base_model)
            return None if active is None else active.id

    def all_for(self, character_ids: list[int]) -> list[LoraActivation]:
        """Every activation of these characters, oldest first (retention's view of when a LoRA was replaced)."""
        out: list[LoraActivation] = []
        with self.db.session(readonly=True) as session:
            for start in range(0, len(character_ids), 1000):
                stmt = (sa.select(LoraActivationRow)
                        .where(LoraActivationRow.character_id.in_(character_ids[start:start + 1000]))
                        .order_by(LoraActivationRow.id))
                out.extend(to_record(LoraActivation, r) for r in session.scalars(stmt))
        return sorted(out, key=lambda a: a.id)

    def active_ids(self, character_ids: list[int] | None = None) -> dict[tuple[int, str], int]:
        """(character, base model) → the active LoRA id, for every pair with a ready LoRA (of `character_ids`)."""
        ready = sa.select(LoraModelRow).where(LoraModelRow.status == "ready")
        if character_ids is not None:
            ready = ready.where(LoraModelRow.character_id.in_(character_ids))
        latest = (sa.select(LoraActivationRow.character_id, LoraActivationRow.base_model,
                            sa.func.max(LoraActivationRow.id).label("id"))
                  .group_by(LoraActivationRow.character_id, LoraActivationRow.base_model).subquery())
        named = sa.select(LoraActivationRow.character_id, LoraActivationRow.base_model,
                          LoraActivationRow.lora_model_id).join(latest, LoraActivationRow.id == latest.c.id)
        with self.db.session(readonly=True) as session:
            pairs: dict[tuple[int, str], list[Version]] = {}
            for row in session.scalars(ready):
                pairs.setdefault((row.character_id, row.base_model), []).append(_version(row))
            activated = {(c, b): lora_id for c, b, lora_id in session.execute(named)}
        return {pair: active_version(versions, activated.get(pair)).id for pair, versions in pairs.items()}

    # --- writes ---
    def activate(self, lora_model_id: int, *, by: str, reason: str, kind: str = "manual") -> LoraActivation:
        """Make this ready LoRA the one generation uses for its character and base model (roll back or forward)."""
        check_short_text(by, "activated_by", 200)
        if not by or not isinstance(reason, str) or not reason.strip():
            raise ValueError("an activation needs who (by) and why (reason)")
        check_text(reason, "reason")
        if kind not in ACTIVATION_KINDS:
            raise ValueError(f"unknown activation kind {kind!r}; known: {', '.join(ACTIVATION_KINDS)}")
        with self.db.session() as session:
            lora = self._lock_pair(session, lora_model_id)
            if lora.status != "ready":
                raise NotActivatable(f"LoRA {lora.id} is {lora.status}; only a ready LoRA can be activated")
            previous = self._active(session, lora.character_id, lora.base_model)
            row = self._insert(session, lora, previous.id if previous else None, kind, by, reason.strip())
            if lora.gate_reason is not None:
                lora.gate_reason = None
                lora.updated_at = utcnow()
            return to_record(LoraActivation, row)

    def gate(self, lora_model_id: int, tolerance: float = GATE_TOLERANCE) -> tuple[GateDecision, LoraModel]:
        """The quality gate for a LoRA that just became ready: activate it, or keep the one in use and write why
        on the row. Decided once per LoRA; asking again returns the recorded decision, re-read."""
        with self.db.session() as session:
            lora = self._lock_pair(session, lora_model_id)
            if lora.status != "ready":
                raise NotActivatable(f"LoRA {lora.id} is {lora.status}; the quality gate decides on ready LoRAs")
            others = [_version(r) for r in self._ready(session, lora.character_id, lora.base_model) if r.id != lora.id]
            latest = self._latest(session, lora.character_id, lora.base_model)
            if lora.gated_at is not None:  # decided before: report against what is in use now
                in_use = active_version([*others, _version(lora)], latest.lora_model_id if latest else None)
                using = in_use is not None and in_use.id == lora.id
                reason = ("it is the LoRA in use" if using else
                          lora.gate_reason or f"LoRA {in_use.id} has been activated since")
                decision = GateDecision(using, reason, in_use.id if in_use else None,
                                        in_use.validation_score if in_use else None, lora.validation_score, tolerance)
                return decision, to_record(LoraModel, lora)
            current = active_version(others, latest.lora_model_id if latest else None)
            decision = gate(_version(lora), current, tolerance)
            now = utcnow()
            if decision.activate:
                self._insert(session, lora, decision.active_id, "gate", GATE_ACTOR, decision.reason)
            elif latest is None or latest.lora_model_id != current.id:
                # pin the LoRA in use: without an activation, "the newest ready" would now be the refused one
                self._insert(session, self._row(session, current.id), current.id, "gate", GATE_ACTOR,
                             f"kept: LoRA {lora.id} {decision.reason}")
            lora.gate_reason = None if decision.activate else decision.reason
            lora.gated_at = now
            lora.updated_at = now
            session.flush()
            return decision, to_record(LoraModel, lora)

    def archive_unused(self, lora_model_id: int) -> tuple[bool, str]:
        """ready → archived, unless under the locks it turns out to be in use: the active LoRA of its base model,
        or pinned by a pending or running job. Returns (archived, why not / "archived")."""
        with self.db.session() as session:
            lora = self._lock_pair(session, lora_model_id)
            if lora.status != "ready":
                return False, f"it is {lora.status}"
            active = self._active(session, lora.character_id, lora.base_model)
            if active is not None and active.id == lora.id:
                return False, "it is the active LoRA"
            pins = session.scalar(sa.select(sa.func.count()).select_from(GenerationJobRow).where(
                GenerationJobRow.requested_lora_model_id == lora.id,
                GenerationJobRow.status.in_(("pending", "running"))))
            if pins:
                return False, f"{pins} pending or running job(s) pinned it"
            apply(LORA_MODELS, lora, {}, "archived")
            return True, "archived"

    # --- helpers ---
    def _lock_pair(self, session: Session, lora_model_id: int) -> LoraModelRow:
        character_id = session.scalar(sa.select(LoraModelRow.character_id).where(LoraModelRow.id == lora_model_id))
        if character_id is None:
            raise RecordNotFoundError(f"LoRA {lora_model_id} does not exist")
        lock_row(session, CHARACTERS, character_id)  # one decision at a time per character
        return lock_row(session, LORA_MODELS, lora_model_id)

    def _row(self, session: Session, lora_model_id: int) -> LoraModelRow:
        return session.get(LoraModelRow, lora_model_id)

    def _ready(self, session: Session, character_id: int, base_model: str) -> list[LoraModelRow]:
        stmt = sa.select(LoraModelRow).where(LoraModelRow.character_id == character_id,
                                             LoraModelRow.base_model == base_model, LoraModelRow.status == "ready")
        return list(session.scalars(stmt))

    def _latest(self, session: Session, character_id: int, base_model: str) -> LoraActivationRow | None:
        stmt = (sa.select(LoraActivationRow)
                .where(LoraActivationRow.character_id == character_id, LoraActivationRow.base_model == base_model)
                .order_by(LoraActivationRow.id.desc()).limit(1))
        return session.scalars(stmt).first()

    def _active(self, session: Session, character_id: int, base_model: str) -> Version | None:
        latest = self._latest(session, character_id, base_model)
        ready = [_version(r) for r in self._ready(session, character_id, base_model)]
        return active_version(ready, latest.lora_model_id if latest else None)

    def _insert(self, session: Session, lora: Any, previous_id: int | None, kind: str, by: str,
                reason: str) -> LoraActivationRow:
        row = LoraActivationRow(character_id=lora.character_id, base_model=lora.base_model, lora_model_id=lora.id,
                                previous_lora_model_id=previous_id, kind=kind, activated_by=by, reason=reason,
                                created_at=utcnow())
        session.add(row)
        session.flush()
        return row
