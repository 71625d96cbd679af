"""Where each LoRA-enabled character stands, per base model it is trained for, and why.

States: `disabled` (LoRA off for the character), `waiting_for_photos` (n of N usable), `queued` (photos are
enough; a run is to come or is building the dataset), `training` (a GPU call is in flight, with its progress),
`ready` (a verified LoRA for the current photos), `failed` (the failing check or the GPU or run error). The
lora_models rows say what happened on the GPU; the training_states rows (written by the training assets and the
`training_failures` sensor) say what happened before a row existed, or to the run around it. `status`, `character
show`, the sensor's observations in the UI and `character add` all read it from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

from lora_pipelines.planning.training import photo_set_hash
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import Character, CharactersRepository
from lora_pipelines.store.lora_models import LoraModel, LoraModelsRepository
from lora_pipelines.store.training_states import TrainingStateRecord, TrainingStatesRepository

STATES = ("disabled", "waiting_for_photos", "queued", "training", "ready", "failed")
# lora_models.error after a failed verification names the failed parts; the asset check of each
ARTIFACT_CHECKS = {"header": "header_valid", "base model": "base_model_matches", "checksum": "checksum_matches"}


@dataclass(frozen=True)
class TrainingState:
    base_model: str
    state: str
    reason: str
    check: str | None = None  # the failing asset check, when one decided it
    progress: float | None = None  # percent, while training
    lora_model_id: int | None = None  # the lora_models row this state is about
    lora_in_use: int | None = None  # the ready LoRA generations use now (may be from earlier photos)
    usable_photos: int | None = None
    required_photos: int | None = None
    run_id: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def summary(self) -> str:
        """A few words for a table cell: `training 40%`, `waiting 2/5 photos`, `failed: enough_photos`."""
        if self.state == "training" and self.progress is not None:
            return f"training {self.progress:.0f}%"
        if self.state == "waiting_for_photos":
            return f"waiting {self.usable_photos}/{self.required_photos} photos"
        if self.state == "failed":
            return f"failed: {self.check or 'see reason'}"
        return self.state


def _latest_ready(rows: list[LoraModel]) -> LoraModel | None:
    ready = [r for r in rows if r.status == "ready"]
    return max(ready, key=lambda r: (r.finished_at or r.updated_at, r.id)) if ready else None


def _check_of(error: str | None) -> str | None:
    if error and error.startswith("artifact verification failed:"):
        failed = [part.strip() for part in error.split(":", 1)[1].split(",")]
        return ", ".join(ARTIFACT_CHECKS.get(part, part) for part in failed)
    return None


def _add_photos_hint(character_id: int) -> str:
    return f"`lora-pipelines character add-photos {character_id} --photos DIR`"


def decide_training_state(character: Character, base_model: str, *, min_photos: int, rows: list[LoraModel],
                          record: TrainingStateRecord | None, progress: float | None = None) -> TrainingState:
    """The state of one character × base model from its lora_models rows (oldest first) and its training_states
    record. Plain logic: no I/O."""
    ready = _latest_ready(rows)
    if not character.lora_enabled:
        return TrainingState(base_model, "disabled",
                             "LoRA is disabled for this character: nothing is trained and its generations take the "
                             f"fallback route (`lora-pipelines character update {character.id} --lora-enabled`)",
                             lora_model_id=ready.id if ready else None)
    in_use = ready.id if ready else None
    photos = photo_set_hash(character.photo_keys)
    current = record if record is not None and record.photo_set == photos else None
    usable = current.usable if current is not None and current.usable is not None else len(character.photo_keys)
    common = {"lora_in_use": in_use, "usable_photos": usable, "required_photos": min_photos}
    if current is not None and current.dataset_hash:
        ours = [r for r in rows if r.dataset_hash == current.dataset_hash]
    elif record is None:
        ours = rows  # nothing recorded (rows older than migration 0004): the latest row tells
    else:
        ours = []  # the record is about other photos, or these photos have no dataset yet
    row = ours[-1] if ours else None
    run = current.run_id if current is not None else None

    if row is not None and row.status == "training":  # a live GPU call: the completion sensor finishes it
        return TrainingState(base_model, "training", f"GPU call {row.gpu_call_id} on {row.backend}",
                             progress=progress, lora_model_id=row.id, **common)
    if row is not None and row.status == "ready":
        return TrainingState(base_model, "ready", f"lora_models {row.id}: {row.model_path}", lora_model_id=row.id,
                             **common)
    if current is not None and current.state == "failed" and (row is None or current.updated_at >= row.updated_at):
        if current.check_name == "enough_photos":
            return TrainingState(base_model, "waiting_for_photos",
                                 f"{current.reason}; add photos with one clear face: {_add_photos_hint(character.id)}",
                                 check="enough_photos", run_id=run, **common)
        return TrainingState(base_model, "failed", current.reason or "the training run failed",
                             check=current.check_name, run_id=run, **common)
    if row is not None and row.status == "failed":
        return TrainingState(base_model, "failed", row.error or "training failed", check=_check_of(row.error),
                             lora_model_id=row.id, **common)
    if row is not None:  # pending: created, not yet submitted
        return TrainingState(base_model, "queued", f"lora_models {row.id} is waiting to be submitted to the GPU",
                             lora_model_id=row.id, **common)
    if usable < min_photos:
        return TrainingState(base_model, "waiting_for_photos",
                             f"{usable} of {min_photos} usable photos: add {min_photos - usable} more with one clear "
                             f"face ({_add_photos_hint(character.id)})", **common)
    later = f"; LoRA {in_use} from earlier photos is used until then" if in_use else ""
    if current is not None and current.state == "preparing":
        return TrainingState(base_model, "queued", f"building the training dataset (run {run[:8]}){later}",
                             run_id=run, **common)
    if current is not None and current.state == "dataset_ready":
        return TrainingState(base_model, "queued", f"dataset ready (run {run[:8]}), GPU training to start{later}",
                             run_id=run, **common)
    return TrainingState(base_model, "queued",
                         "waiting for the new_characters sensor to request training (it runs in `dagster dev` or "
                         f"dagster-daemon){later}", **common)


def training_states(ctx: PipelineContext, characters: Iterable[Character], *,
                    with_progress: bool = False) -> dict[int, list[TrainingState]]:
    """Character id → its state per trained base model (LORA_PIPELINES_TRAIN_BASE_MODELS, plus any other base
    model it has a LoRA for). `with_progress` asks a running training backend how far calls in flight are (never
    starting one)."""
    characters = list(characters)
    base_models = ctx.settings.train_base_model_list
    records = TrainingStatesRepository(ctx.db).for_characters([c.id for c in characters])
    loras = LoraModelsRepository(ctx.db)
    rows_of = {c.id: loras.find_by_character_id(c.id) for c in characters}
    in_flight = with_progress and any(r.status == "training" for rows in rows_of.values() for r in rows)
    out: dict[int, list[TrainingState]] = {}
    with progress_poller(ctx, enabled=in_flight) as progress_of:
        for character in characters:
            rows = rows_of[character.id]
            models = base_models + sorted({r.base_model for r in rows} - set(base_models))
            states = []
            for base_model in models:
                mine = [r for r in rows if r.base_model == base_model]
                states.append(decide_training_state(
                    character, base_model, min_photos=ctx.settings.min_photos, rows=mine,
                    record=records.get((character.id, base_model)), progress=progress_of(mine)))
            out[character.id] = states
    return out


PROGRESS_TIMEOUT_S = 3.0


@contextlib.contextmanager
def progress_poller(ctx: PipelineContext, *, enabled: bool = True) -> Iterator[Callable[[list], float | None]]:
    """rows → the progress (%) of the latest row's GPU call while it trains, from a training backend that is
    already running (nothing is started), asked with a short timeout; after one failed poll it asks no more:
    progress is a nicety, and `status` must answer when the GPU side does not."""
    backend = None
    if enabled:
        with contextlib.suppress(Exception):
            from lora_pipelines.gpu.factory import connect_training_backend

            backend = connect_training_backend(
                ctx.settings.model_copy(update={"gpu_timeout_seconds": PROGRESS_TIMEOUT_S}))
    broken = backend is None

    def progress_of(rows: list[LoraModel]) -> float | None:
        nonlocal broken
        if broken or not rows or rows[-1].status != "training" or not rows[-1].gpu_call_id:
            return None
        try:
            return backend.poll(rows[-1].gpu_call_id).progress
        except Exception:  # noqa: BLE001 - any failure means no progress to show
            broken = True
            return None

    try:
        yield progress_of
    finally:
        if backend is not None and hasattr(backend, "close"):
            backend.close()


# --- what the training assets and sensors record ------------------------------------------------------------

def _photo_set(ctx: PipelineContext, character_id: int) -> str | None:
    character = CharactersRepository(ctx.db).get(character_id)
    return None if character is None else photo_set_hash(character.photo_keys)


def record_preparing(ctx: PipelineContext, character_id: int, base_model: str, run_id: str) -> None:
    photos = _photo_set(ctx, character_id)
    if photos is not None:
        TrainingStatesRepository(ctx.db).record(character_id, base_model, photo_set=photos, state="preparing",
                                                run_id=run_id, required=ctx.settings.min_photos)


def record_dataset(ctx: PipelineContext, descriptor, run_id: str) -> TrainingStateRecord | None:
    """The dataset step's verdict: ready for the GPU, or the blocking check that stops it (with the numbers)."""
    photos = _photo_set(ctx, descriptor.character_id)
    if photos is None:
        return None
    fields = {"photo_set": photos, "run_id": run_id, "dataset_hash": descriptor.dataset_hash,
              "usable": descriptor.usable, "required": descriptor.min_photos}
    repo = TrainingStatesRepository(ctx.db)
    if descriptor.usable < descriptor.min_photos:
        dropped = ", ".join(f"{d['name']} ({d['reason']})" for d in descriptor.dropped[:5])
        reason = (f"enough_photos: {descriptor.usable} of {descriptor.min_photos} usable photos"
                  + (f"; dropped {dropped}" if dropped else ""))
        return repo.record(descriptor.character_id, descriptor.base_model, state="failed", check_name="enough_photos",
                           reason=reason, **fields)
    if descriptor.outliers:
        names = ", ".join(o["name"] for o in descriptor.outliers)
        return repo.record(descriptor.character_id, descriptor.base_model, state="failed",
                           check_name="single_identity",
                           reason=f"single_identity: faces of more than one person ({names}); remove those photos",
                           **fields)
    return repo.record(descriptor.character_id, descriptor.base_model, state="dataset_ready", **fields)


def record_run_failure(ctx: PipelineContext, character_id: int, base_model: str, run_id: str, reason: str) -> bool:
    """A training run failed: record why, unless the run already recorded a more precise reason (a failing
    check). Returns whether it recorded anything."""
    photos = _photo_set(ctx, character_id)
    if photos is None:
        return False
    repo = TrainingStatesRepository(ctx.db)
    existing = repo.get(character_id, base_model)
    if existing is not None and existing.run_id == run_id and existing.state == "failed":
        return False
    keep = {} if existing is None or existing.photo_set != photos else {
        "dataset_hash": existing.dataset_hash, "usable": existing.usable, "required": existing.required}
    repo.record(character_id, base_model, photo_set=photos, state="failed", reason=reason, run_id=run_id, **keep)
    return True
