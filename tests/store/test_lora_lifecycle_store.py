"""The LoRA lifecycle in the app database, on SQLite and PostgreSQL: activations and the quality gate, pins refused
at enqueue, archiving under the locks, and feedback stored all-or-nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_feedback import GenerationFeedbackRepository, NewFeedback
from lora_pipelines.store.generation_jobs import GenerationJobsRepository, PinRefused
from lora_pipelines.store.lora_activations import LoraActivationsRepository, NotActivatable
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.rows import RecordNotFoundError
from lora_pipelines.store.status import IllegalStatusTransition


class Repos:
    def __init__(self, db):
        self.db = db
        self.characters = CharactersRepository(db)
        self.loras = LoraModelsRepository(db)
        self.jobs = GenerationJobsRepository(db)
        self.versions = LoraActivationsRepository(db)
        self.feedback = GenerationFeedbackRepository(db)
        self.anna = self.characters.create("Anna", lora_enabled=True)

    def ready_lora(self, base_model="flux", score=None, character=None):
        character = character or self.anna
        n = len(self.loras.find_by_character_id(character.id)) + 1
        row = self.loras.create(character.id, base_model, character.trigger_word, f"k{character.id}-{base_model}-{n}")
        self.loras.transition(row.id, "training", gpu_call_id=f"fc-{row.id}")
        return self.loras.transition(row.id, "ready", validation_score=score, sha256="a" * 64,
                                     model_path=f"loras/{base_model}-character-{character.id}/{row.id}.safetensors")


@pytest.fixture()
def repos(app_db) -> Repos:
    return Repos(app_db)


def test_a_worse_retrain_stays_ready_but_not_active_until_activated_by_hand(repos):
    first = repos.ready_lora(score=0.71)
    decision, _ = repos.versions.gate(first.id, tolerance=0.03)
    assert decision.activate and repos.versions.active_id(repos.anna.id, "flux") == first.id

    worse = repos.ready_lora(score=0.52)
    decision, row = repos.versions.gate(worse.id, tolerance=0.03)
    assert not decision.activate and (decision.active_id, decision.active_score) == (first.id, 0.71)
    assert row.status == "ready" and "below active LoRA" in row.gate_reason and row.gated_at is not None
    assert repos.versions.active_id(repos.anna.id, "flux") == first.id  # though `worse` is the newest ready

    again, _ = repos.versions.gate(worse.id, tolerance=0.03)  # decided once: asking again re-reads it
    assert not again.activate and len(repos.versions.history(repos.anna.id)) == 1

    activation = repos.versions.activate(worse.id, by="ops@example", reason="the new photos are better")
    assert (activation.previous_lora_model_id, activation.kind, activation.activated_by) == (first.id, "manual",
                                                                                              "ops@example")
    assert repos.versions.active_id(repos.anna.id, "flux") == worse.id
    assert repos.loras.get(worse.id).gate_reason is None
    repos.versions.activate(first.id, by="ops@example", reason="roll back")
    assert repos.versions.active_id(repos.anna.id, "flux") == first.id
    assert [a.lora_model_id for a in repos.versions.history(repos.anna.id)] == [first.id, worse.id, first.id]


def test_a_refusal_without_any_activation_pins_the_lora_in_use(repos):
    """Before any activation the newest ready LoRA is used: refusing a newer one must record the one in use."""
    first = repos.ready_lora(score=0.7)  # made ready without going through the gate
    worse = repos.ready_lora(score=0.2)
    decision, _ = repos.versions.gate(worse.id, tolerance=0.03)
    assert not decision.activate
    assert repos.versions.active_id(repos.anna.id, "flux") == first.id
    assert repos.versions.active_ids() == {(repos.anna.id, "flux"): first.id}


def test_no_scores_means_the_newest_and_base_models_are_separate(repos):
    scored = repos.ready_lora(score=0.9)
    repos.versions.gate(scored.id)
    unscored = repos.ready_lora(score=None)
    assert repos.versions.gate(unscored.id)[0].activate
    qwen = repos.ready_lora("qwen-image", score=0.1)
    assert repos.versions.gate(qwen.id)[0].activate
    assert repos.versions.active_ids() == {(repos.anna.id, "flux"): unscored.id, (repos.anna.id, "qwen-image"): qwen.id}


def test_only_ready_loras_can_be_activated(repos):
    pending = repos.loras.create(repos.anna.id, "flux", repos.anna.trigger_word, "kp")
    with pytest.raises(NotActivatable, match=f"LoRA {pending.id} is pending"):
        repos.versions.activate(pending.id, by="me", reason="why not")
    with pytest.raises(RecordNotFoundError, match="LoRA 999 does not exist"):
        repos.versions.activate(999, by="me", reason="x")
    with pytest.raises(ValueError, match="who .* and why"):
        repos.versions.activate(pending.id, by="me", reason="  ")


def test_concurrent_gates_decide_one_after_the_other(repos):
    """Two LoRAs of one character and base model become ready at once: each gate sees the other's decision."""
    base = repos.ready_lora(score=0.5)
    repos.versions.gate(base.id)
    better = [repos.ready_lora(score=0.6), repos.ready_lora(score=0.8)]
    errors = []

    def run(lora_id):
        try:
            repos.versions.gate(lora_id, tolerance=0.0)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(lora.id,)) for lora in better]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    history = repos.versions.history(repos.anna.id)
    assert len(history) >= 2 and len({a.previous_lora_model_id for a in history}) == len(history)  # a chain
    # whichever ran second compared against the first one's outcome: the 0.8 LoRA is in use either way
    assert repos.versions.active_id(repos.anna.id, "flux") == better[1].id


def test_a_pin_must_be_a_ready_lora_of_the_character_for_the_models_base_model(repos):
    bob = repos.characters.create("Bob", lora_enabled=True)
    flux = repos.ready_lora(score=0.5)
    bobs = repos.ready_lora(character=bob)
    pending = repos.loras.create(repos.anna.id, "flux", repos.anna.trigger_word, "kpend")

    [job] = repos.jobs.enqueue(repos.anna.id, "flux", "hi", strength=1.3, lora_model_id=flux.id, base_model="flux")
    stored = repos.jobs.get(job)
    assert (stored.requested_lora_model_id, stored.requested_strength, stored.lora_strength) == (flux.id, 1.3, None)
    refusals = {
        bobs.id: f"LoRA {bobs.id} belongs to character {bob.id}, not {repos.anna.id}",
        pending.id: f"LoRA {pending.id} is pending, not ready",
        999: "LoRA 999 does not exist",
    }
    for lora_id, message in refusals.items():
        with pytest.raises(PinRefused, match=message):
            repos.jobs.enqueue(repos.anna.id, "flux", "hi", lora_model_id=lora_id, base_model="flux")
    with pytest.raises(PinRefused, match=f"LoRA {flux.id} is a flux LoRA; this model needs a qwen-image one"):
        repos.jobs.enqueue(repos.anna.id, "qwen-image", "hi", lora_model_id=flux.id, base_model="qwen-image")
    for strength in (-0.1, 2.01, float("nan"), True):
        with pytest.raises(ValueError, match="strength must be a number from 0 to 2"):
            repos.jobs.enqueue(repos.anna.id, "flux", "hi", strength=strength)
    assert repos.jobs.pinned_lora_ids() == {flux.id}


def test_archiving_refuses_what_is_in_use_and_archived_is_final(repos):
    old = repos.ready_lora(score=0.5)
    repos.versions.gate(old.id)
    new = repos.ready_lora(score=0.6)
    repos.versions.gate(new.id)
    assert repos.versions.archive_unused(new.id) == (False, "it is the active LoRA")

    [job] = repos.jobs.enqueue(repos.anna.id, "flux", "hi", lora_model_id=old.id, base_model="flux")
    assert repos.versions.archive_unused(old.id) == (False, "1 pending or running job(s) pinned it")
    repos.jobs.claim(job, "w")
    assert repos.versions.archive_unused(old.id)[0] is False  # running still counts
    repos.jobs.finish(job, "succeeded")

    assert repos.versions.archive_unused(old.id) == (True, "archived")
    archived = repos.loras.get(old.id)
    assert archived.status == "archived" and archived.archived_at is not None
    assert repos.versions.archive_unused(old.id) == (False, "it is archived")
    with pytest.raises(IllegalStatusTransition, match="archived -> ready"):
        repos.loras.transition(old.id, "ready")
    with pytest.raises(PinRefused, match="is archived, not ready"):
        repos.jobs.enqueue(repos.anna.id, "flux", "hi", lora_model_id=old.id, base_model="flux")
    assert repos.loras.count_by_status() == {"ready": 1, "archived": 1}


def _rating(job_id, verdict="better", by="ann", **kw):
    return NewFeedback(job_id=job_id, rating=verdict, verdict=verdict, rated_by=by,
                       rated_at=datetime(2025, 3, 1, tzinfo=UTC), source="test", **kw)


def test_feedback_is_stored_all_or_nothing_and_a_second_rating_replaces_the_first(repos):
    a, b = repos.jobs.enqueue(repos.anna.id, "flux", "hi", count=2)
    repos.feedback.record([_rating(a), _rating(b, "worse", note="not her")])
    assert repos.feedback.count() == 2

    with pytest.raises(RecordNotFoundError, match="unknown generation job\\(s\\): 998, 999"):
        repos.feedback.record([_rating(a, "same"), _rating(999), _rating(998)])
    assert [f.verdict for f in repos.feedback.for_job(a)] == ["better"]  # nothing of the failed batch stayed

    repos.feedback.record([_rating(a, "same"), _rating(a, "worse", by="bo")])
    assert sorted((f.rated_by, f.verdict) for f in repos.feedback.for_job(a)) == [("ann", "same"), ("bo", "worse")]
    with pytest.raises(ValueError, match="verdict must be one of"):
        repos.feedback.record([_rating(a, "great")])
    with pytest.raises(ValueError, match="note contains a NUL byte"):
        repos.feedback.record([_rating(a, note="x\x00")])
