"""Where a character × base model stands, from its lora_models rows and its training_states record: every state
with the reason an operator acts on."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

from lora_pipelines.planning.training import photo_set_hash
from lora_pipelines.services.training_state import decide_training_state
from lora_pipelines.store.characters import Character
from lora_pipelines.store.lora_models import LoraModel
from lora_pipelines.store.training_states import TrainingStateRecord

T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)
PHOTOS = [f"characters/7/photos/{i}.jpg" for i in range(6)]


def character(photos=PHOTOS, enabled=True) -> Character:
    return Character(7, "Katy Perry", enabled, "ohwx_katy_perry", list(photos), T0, T0)


def row(id_: int, status: str, *, dataset="d1", at=T0, error=None) -> LoraModel:
    values = {"id": id_, "character_id": 7, "status": status, "base_model": "flux", "trigger_word": "ohwx_katy_perry",
              "gpu_call_id": f"fc-{id_}", "backend": "simulated", "dataset_hash": dataset,
              "idempotency_key": f"train:7:flux:{dataset}", "attempt": 1, "error": error, "created_at": at,
              "updated_at": at, "training_started_at": at,
              "finished_at": at if status in ("ready", "failed") else None,
              "model_path": f"loras/flux-character-7/{id_}.safetensors" if status == "ready" else None,
              "sha256": "a" * 64 if status == "ready" else None}
    return LoraModel(**{f.name: values.get(f.name) for f in fields(LoraModel)})


def record(state: str, *, photos=PHOTOS, dataset="d1", check=None, reason=None, at=T0, usable=6) -> TrainingStateRecord:
    return TrainingStateRecord(7, "flux", photo_set_hash(photos), state, check, reason, "run12345abcd", dataset,
                               usable, 5, at, at)


def decide(rows=(), rec=None, *, c=None, progress=None):
    return decide_training_state(c or character(), "flux", min_photos=5, rows=list(rows), record=rec,
                                 progress=progress)


def test_a_disabled_character_is_disabled_whatever_its_rows_say():
    state = decide([row(1, "ready")], c=character(enabled=False))
    assert state.state == "disabled" and "--lora-enabled" in state.reason and state.lora_in_use is None


def test_too_few_photos_waits_for_photos_with_the_count_and_the_command():
    state = decide(c=character(PHOTOS[:2]))
    assert (state.state, state.usable_photos, state.required_photos) == ("waiting_for_photos", 2, 5)
    assert "2 of 5 usable photos: add 3 more" in state.reason and "character add-photos 7" in state.reason
    assert state.summary == "waiting 2/5 photos"


def test_enough_photos_and_nothing_yet_is_queued_for_the_sensor():
    state = decide()
    assert state.state == "queued" and "new_characters sensor" in state.reason


def test_a_failed_enough_photos_check_waits_for_photos_naming_the_check():
    rec = record("failed", check="enough_photos", reason="enough_photos: 0 of 5 usable photos", usable=0, dataset="d0")
    state = decide(rec=rec)
    assert (state.state, state.check, state.usable_photos) == ("waiting_for_photos", "enough_photos", 0)
    assert state.reason.startswith("enough_photos: 0 of 5 usable photos; add photos")


def test_a_failed_identity_check_is_failed_with_the_check():
    rec = record("failed", check="single_identity", reason="single_identity: faces of more than one person (x.jpg)")
    state = decide(rec=rec)
    assert (state.state, state.check) == ("failed", "single_identity") and "x.jpg" in state.reason
    assert state.summary == "failed: single_identity"


def test_training_shows_progress_and_ready_names_the_file():
    training = decide([row(3, "training")], record("dataset_ready"), progress=40.0)
    assert (training.state, training.progress, training.summary) == ("training", 40.0, "training 40%")
    ready = decide([row(3, "ready")], record("dataset_ready"))
    assert ready.state == "ready" and "loras/flux-character-7/3.safetensors" in ready.reason


def test_new_photos_queue_a_new_training_while_the_earlier_lora_stays_in_use():
    more = [*PHOTOS, "characters/7/photos/new.jpg"]
    state = decide([row(3, "ready")], record("dataset_ready"), c=character(more))
    assert state.state == "queued" and state.lora_in_use == 3
    assert "LoRA 3 from earlier photos is used until then" in state.reason


def test_a_failed_verification_names_the_artifact_checks():
    bad = row(4, "failed", error="artifact verification failed: base model, checksum")
    state = decide([bad], record("dataset_ready"))
    assert (state.state, state.check) == ("failed", "base_model_matches, checksum_matches")


def test_a_run_failure_recorded_after_the_row_beats_a_pending_row_and_not_a_newer_one():
    pending = row(5, "pending", at=T0)
    failed_run = record("failed", reason="run 1a2b3c4d failed in trained_lora: GPU refused", at=T0 + timedelta(1))
    assert decide([pending], failed_run).state == "failed"
    assert "GPU refused" in decide([pending], failed_run).reason
    resumed = replace(pending, status="training", updated_at=T0 + timedelta(2))
    assert decide([resumed], failed_run).state == "training"  # a live call: the completion sensor finishes it
    assert decide([replace(pending, updated_at=T0 + timedelta(2))], failed_run).state == "queued"


def test_rows_from_before_any_record_still_tell_the_state():
    assert decide([row(1, "failed", error="GPU training failed: out of memory")]).reason.endswith("out of memory")
