"""Repositories on SQLite and on the real PostgreSQL: status rules, cursors, idempotency and races."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lora_pipelines.domain.keys import InvalidIdError
from lora_pipelines.domain.trigger_words import InvalidTriggerWordError, trigger_word_for
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import IdempotencyConflictError, LoraModelsRepository
from lora_pipelines.store.rows import RecordNotFoundError
from lora_pipelines.store.status import IllegalStatusTransition, UnknownStatusError, check_generation_transition
from lora_pipelines.store.tables import GenerationJobRow


@pytest.fixture()
def db(app_db):
    return app_db


@pytest.fixture()
def repos(db):
    return CharactersRepository(db), LoraModelsRepository(db), GenerationJobsRepository(db)


def _in_threads(n: int, fn):
    """Run fn(i) in n threads released together; returns the results in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# --- characters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Anna Maria", "ohwx_anna_maria"), ("  Zoë O'Neil-Smith ", "ohwx_zoe_o_neil_smith"), ("R2 D2!!", "ohwx_r2_d2")],
)
def test_trigger_word_from_name(name: str, expected: str) -> None:
    assert trigger_word_for(name) == expected


def test_trigger_word_for_names_without_latin_letters_is_stable_and_valid() -> None:
    word = trigger_word_for("李小龙")
    assert word == trigger_word_for("李小龙") != trigger_word_for("王菲")
    assert word.startswith("ohwx_") and len(word) <= 64
    assert len(trigger_word_for("a" * 200)) == 64


def test_character_create_get_update(repos) -> None:
    characters, _, _ = repos
    created = characters.create("Anna Maria", lora_enabled=True, photo_keys=["characters/1/photos/a.jpg"])

    assert created.trigger_word == "ohwx_anna_maria"
    assert created.created_at.utcoffset() == timedelta(0)
    assert characters.get(created.id) == created
    assert characters.get(created.id + 1000) is None

    updated = characters.update(created.id, lora_enabled=False, trigger_word="annam")
    assert (updated.lora_enabled, updated.trigger_word, updated.name) == (False, "annam", "Anna Maria")
    assert updated.updated_at > created.updated_at
    assert characters.get(created.id) == updated


def test_character_bad_input_names_what_was_wrong(repos) -> None:
    characters, _, _ = repos
    with pytest.raises(ValueError, match="name is empty"):
        characters.create("   ")
    with pytest.raises(ValueError, match="at most 200"):
        characters.create("x" * 201)
    with pytest.raises(InvalidTriggerWordError):
        characters.create("Ok", trigger_word="has space")
    with pytest.raises(InvalidIdError):
        characters.create("Ok", photo_keys=["../etc/passwd"])
    created = characters.create("Ok")
    with pytest.raises(ValueError, match="no updatable field.*colour"):
        characters.update(created.id, colour="red")
    with pytest.raises(RecordNotFoundError, match="characters 999999 does not exist"):
        characters.update(999999, name="x")
    assert characters.count() == 1


def test_changed_since_pages_through_every_change_in_order(repos) -> None:
    characters, _, _ = repos
    ids = [characters.create(f"Person {i}").id for i in range(5)]
    characters.update(ids[1], lora_enabled=True)

    seen, cursor = [], (None, 0)
    while page := characters.changed_since(cursor[0], cursor[1], limit=2):
        seen += [c.id for c in page]
        cursor = (page[-1].updated_at, page[-1].id)

    assert seen == [ids[0], ids[2], ids[3], ids[4], ids[1]]
    assert characters.changed_since(*cursor, limit=10) == []
    characters.add_photo_keys(ids[3], ["characters/3/photos/new.jpg"])
    assert [c.id for c in characters.changed_since(*cursor, limit=10)] == [ids[3]]
    assert [c.id for c in characters.list(limit=2, offset=1)] == ids[1:3]


# --- LoRA models ---------------------------------------------------------------------------------------


def _lora(repos, key: str = "k1", base_model: str = "flux"):
    characters, loras, _ = repos
    character = characters.create("Lena", lora_enabled=True)
    return character, loras.create(character.id, base_model, character.trigger_word, key, "hash1", "ai-toolkit")


def test_lora_moves_forward_and_stamps_times(repos) -> None:
    _, loras, _ = repos
    _, lora = _lora(repos)
    assert (lora.status, lora.attempt, lora.training_started_at) == ("pending", 1, None)

    training = loras.transition(lora.id, "training", gpu_call_id="fc-123", backend="simulated")
    same = loras.transition(lora.id, "training", job_id="job-1")
    ready = loras.transition(lora.id, "ready", model_path="loras/flux-character-1/job-1.safetensors",
                             sha256="ab" * 32, size_bytes=1234)  # fmt: skip

    assert training.training_started_at is not None and training.gpu_call_id == "fc-123"
    assert same.job_id == "job-1" and same.gpu_call_id == "fc-123"
    assert ready.status == "ready" and ready.finished_at >= training.training_started_at
    assert loras.get(lora.id) == ready


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "ready"),
        (["training"], "pending"),
        (["training", "ready"], "training"),
        (["training", "ready"], "failed"),
        (["failed"], "training"),
        (["training", "failed"], "ready"),
    ],
)
def test_illegal_lora_moves_raise_and_change_nothing(repos, path: list[str], illegal: str) -> None:
    _, loras, _ = repos
    _, lora = _lora(repos)
    for status in path:
        loras.transition(lora.id, status)
    before = loras.get(lora.id)

    with pytest.raises(IllegalStatusTransition,
                       match=f"lora_models {lora.id}: {before.status} -> {illegal} is not allowed"):
        loras.transition(lora.id, illegal, error="should not be written")

    assert loras.get(lora.id) == before


def test_unknown_status_and_bad_fields_are_refused(repos) -> None:
    _, loras, _ = repos
    _, lora = _lora(repos)
    with pytest.raises(UnknownStatusError, match="'done'"):
        loras.transition(lora.id, "done")
    with pytest.raises(UnknownStatusError):
        loras.list_by_status("nope")
    with pytest.raises(ValueError, match="sha256"):
        loras.update_fields(lora.id, sha256="xyz")
    with pytest.raises(ValueError, match="use transition"):
        loras.update_fields(lora.id, status="ready")
    with pytest.raises(RecordNotFoundError):
        loras.transition(lora.id + 100, "training")
    assert loras.get(lora.id) == lora


def test_most_recent_ready_lora(repos) -> None:
    characters, loras, _ = repos
    anna = characters.create("Anna")
    other = characters.create("Other")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def ready(key: str, base_model: str, finished: datetime, character=anna):
        row = loras.create(character.id, base_model, character.trigger_word, key)
        loras.transition(row.id, "training")
        return loras.transition(row.id, "ready", finished_at=finished)

    old_flux = ready("a", "flux", t0)
    new_qwen = ready("b", "qwen-image", t0 + timedelta(hours=2))
    ready("c", "flux", t0 + timedelta(hours=5), character=other)
    failed = loras.create(anna.id, "flux", anna.trigger_word, "d")
    loras.transition(failed.id, "failed", error="oom")
    loras.create(anna.id, "flux", anna.trigger_word, "e")  # pending, newest of all

    assert loras.find_ready_by_character_id(anna.id) == new_qwen
    assert loras.find_ready_by_character_id(anna.id, "flux") == old_flux
    assert loras.find_ready_by_character_id(anna.id, "z-image-turbo") is None
    assert [r.idempotency_key for r in loras.find_by_character_and_model(anna.id, "flux")] == ["a", "d", "e"]
    assert [r.idempotency_key for r in loras.find_by_character_id(anna.id)] == ["a", "b", "d", "e"]
    assert [r.idempotency_key for r in loras.list_by_status("ready", limit=1, after_id=old_flux.id)] == ["b"]
    assert loras.count_by_status() == {"ready": 3, "failed": 1, "pending": 1}


def test_create_is_get_or_create_by_idempotency_key(repos) -> None:
    characters, loras, _ = repos
    character, first = _lora(repos, key="char-1:flux:hash1:1")

    again = loras.create(character.id, "flux", character.trigger_word, "char-1:flux:hash1:1", "hash1", "ai-toolkit")
    assert again == first
    assert loras.find_by_idempotency_key("char-1:flux:hash1:1") == first
    with pytest.raises(IdempotencyConflictError, match="char-1:flux:hash1:1"):
        loras.create(character.id, "qwen-image", character.trigger_word, "char-1:flux:hash1:1")
    with pytest.raises(RecordNotFoundError, match=f"characters {character.id + 999} does not exist"):
        loras.create(character.id + 999, "flux", "ohwx_x", "other-key")  # no such character


def test_concurrent_get_or_create_makes_one_row(repos) -> None:
    characters, loras, _ = repos
    character = characters.create("Racer")
    results = _in_threads(6, lambda i: loras.create(character.id, "flux", character.trigger_word, "same-key"))
    assert len({r.id for r in results}) == 1
    assert len(loras.find_by_character_id(character.id)) == 1


# --- generation jobs -----------------------------------------------------------------------------------


def test_enqueue_claim_finish(repos) -> None:
    characters, _, jobs = repos
    character = characters.create("Mia")
    ids = jobs.enqueue(character.id, "qwen-image", "on a beach", count=3)

    assert [j.id for j in jobs.pending_after(0, limit=10)] == ids
    assert [j.id for j in jobs.pending_after(ids[0], limit=1)] == [ids[1]]

    claimed = jobs.claim(ids[0], "worker-a")
    assert (claimed.status, claimed.claimed_by) == ("running", "worker-a") and claimed.started_at is not None
    assert jobs.claim(ids[0], "worker-b") is None
    with pytest.raises(IllegalStatusTransition, match=f"generation_jobs {ids[1]}: pending -> succeeded"):
        jobs.finish(ids[1], "succeeded")

    jobs.merge_input_metadata(ids[0], {"loraModelId": 4, "triggerWord": "ohwx_mia", "fallbackChain": ["lora"]})
    done = jobs.finish(ids[0], "succeeded", mode="lora", sent_prompt="ohwx_mia, on a beach", lora_model_id=4,
                       trigger_word="ohwx_mia", output_keys=[f"generations/{ids[0]}/000.png"])  # fmt: skip
    scored = jobs.record_face_score(ids[0], 0.31, True, 1)

    assert done.finished_at is not None and done.input_metadata["fallbackChain"] == ["lora"]
    assert (scored.face_distance, scored.face_match, scored.face_count) == (0.31, True, 1)
    assert jobs.get(ids[0]).sent_prompt == "ohwx_mia, on a beach"
    with pytest.raises(IllegalStatusTransition):
        jobs.finish(ids[0], "failed")
    jobs.finish(ids[1], "failed", error="refused before running")
    assert jobs.count_by_status() == {"pending": 1, "succeeded": 1, "failed": 1}
    assert jobs.count_by_mode() == {"lora": 1}
    assert [j.id for j in jobs.list(status="failed", character_id=character.id)] == [ids[1]]


def test_generation_bad_input(repos) -> None:
    characters, _, jobs = repos
    with pytest.raises(RecordNotFoundError):
        jobs.enqueue(12345, "flux", "x")
    character = characters.create("Ok")
    with pytest.raises(ValueError, match="count"):
        jobs.enqueue(character.id, "flux", "x", count=0)
    (job_id,) = jobs.enqueue(character.id, "flux", "x")
    with pytest.raises(ValueError, match="'succeeded' or 'failed'"):
        jobs.finish(job_id, "pending")
    with pytest.raises(ValueError, match="unknown generation mode"):
        jobs.update_fields(job_id, mode="magic")
    with pytest.raises(ValueError, match="face_distance"):
        jobs.record_face_score(job_id, float("nan"), None, 0)
    with pytest.raises(IllegalStatusTransition, match="running -> pending"):
        check_generation_transition(job_id, "running", "pending")


def test_two_workers_never_claim_the_same_job(repos) -> None:
    characters, _, jobs = repos
    character = characters.create("Contested")
    for job_id in jobs.enqueue(character.id, "flux", "x", count=5):
        claims = _in_threads(2, lambda i, job_id=job_id: jobs.claim(job_id, f"worker-{i}"))
        winners = [r for r in claims if r is not None]
        assert len(winners) == 1
        assert jobs.get(job_id).claimed_by == winners[0].claimed_by


def _backdate(db: Database, job_id: int, minutes: int) -> None:
    with db.session() as session:
        started = datetime.now(UTC) - timedelta(minutes=minutes)
        session.execute(sa.update(GenerationJobRow).where(GenerationJobRow.id == job_id).values(started_at=started))


def test_requeue_stale_retries_then_fails(db, repos) -> None:
    characters, _, jobs = repos
    character = characters.create("Sleepy")
    stale, fresh = jobs.enqueue(character.id, "flux", "x", count=2)
    jobs.claim(fresh, "alive")

    for attempt in (1, 2):
        assert jobs.claim(stale, f"w{attempt}") is not None
        _backdate(db, stale, minutes=30)
        assert jobs.requeue_stale(timedelta(minutes=10), max_attempts=3) == [stale]
        job = jobs.get(stale)
        assert (job.status, job.attempts, job.claimed_by, job.started_at) == ("pending", attempt, None, None)

    jobs.claim(stale, "w3")
    _backdate(db, stale, minutes=30)
    assert jobs.requeue_stale(timedelta(minutes=10), max_attempts=3) == [stale]
    job = jobs.get(stale)
    assert (job.status, job.attempts, job.error) == ("failed", 3, "stale after 3 attempts")
    assert job.finished_at is not None
    assert jobs.get(fresh).status == "running"
    assert jobs.requeue_stale(timedelta(minutes=10), max_attempts=3) == []


def test_concurrent_appends_lose_no_write(repos) -> None:
    characters, _, jobs = repos
    character = characters.create("Busy")
    (job_id,) = jobs.enqueue(character.id, "flux", "x")

    def append(worker: int) -> None:
        for n in range(50):
            jobs.add_output_key(job_id, f"generations/{job_id}/w{worker}-{n:03d}.png")
            characters.add_photo_keys(character.id, [f"characters/{character.id}/photos/w{worker}-{n}.jpg"])

    _in_threads(2, append)

    assert len(set(jobs.get(job_id).output_keys)) == 100
    assert len(characters.get(character.id).photo_keys) == 100


def test_new_rows_have_equal_created_and_updated_times(repos) -> None:
    characters, loras, jobs = repos
    character = characters.create("Fresh")
    lora = loras.create(character.id, "flux", character.trigger_word, "fresh-key")
    job = jobs.get(jobs.enqueue(character.id, "flux", "x")[0])
    for record in (character, lora, job):
        assert record.created_at == record.updated_at
        assert record.created_at.tzinfo is not None and record.created_at.utcoffset() == timedelta(0)
