"""Characters in the app database (SQLite and PostgreSQL): unique trigger words, names, removal with history,
training states, and migration 0004 on a database that already holds duplicate trigger words."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lora_pipelines.store.characters import CharactersRepository, TriggerWordTakenError
from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.training_states import TrainingStatesRepository


def test_derived_trigger_words_get_a_suffix_and_a_taken_explicit_one_is_refused(app_db):
    repo = CharactersRepository(app_db)
    first, second, third = (repo.create("Katy Perry") for _ in range(3))

    assert [first.trigger_word, second.trigger_word, third.trigger_word] == [
        "ohwx_katy_perry", "ohwx_katy_perry_2", "ohwx_katy_perry_3"]
    with pytest.raises(TriggerWordTakenError, match=f"taken by character {first.id}"):
        repo.create("Someone Else", trigger_word="ohwx_katy_perry")
    with pytest.raises(TriggerWordTakenError):
        repo.update(third.id, trigger_word="ohwx_katy_perry_2")
    assert repo.get(third.id).trigger_word == "ohwx_katy_perry_3"
    assert repo.count() == 3


def test_find_by_name_ignores_case_and_spaces(app_db):
    repo = CharactersRepository(app_db)
    katy = repo.create("Katy Perry")
    repo.create("Katy")

    assert [c.id for c in repo.find_by_name("  katy PERRY ")] == [katy.id]
    assert repo.find_by_name("Nobody") == []


def test_remove_deletes_the_character_with_its_rows_and_nobody_elses(app_db):
    chars, loras, jobs = CharactersRepository(app_db), LoraModelsRepository(app_db), GenerationJobsRepository(app_db)
    states = TrainingStatesRepository(app_db)
    gone, kept = chars.create("Gone"), chars.create("Kept")
    for character in (gone, kept):
        loras.create(character.id, "flux", character.trigger_word, f"k{character.id}", "h", "ai-toolkit")
        jobs.enqueue(character.id, "flux", "p", count=2)
        states.record(character.id, "flux", photo_set="p", state="preparing")

    removed = chars.remove(gone.id)

    assert (removed.lora_models, len(removed.generation_job_ids), removed.training_states) == (1, 2, 1)
    assert chars.get(gone.id) is None and chars.get(kept.id) is not None
    assert loras.find_by_character_id(gone.id) == [] and len(loras.find_by_character_id(kept.id)) == 1
    assert {j.character_id for j in jobs.list(limit=10)} == {kept.id}
    assert states.get(gone.id, "flux") is None and states.get(kept.id, "flux") is not None
    assert chars.existing_ids([gone.id, kept.id, 999]) == {kept.id}


def test_a_training_state_is_one_row_per_character_and_base_model(app_db):
    character = CharactersRepository(app_db).create("Anna")
    repo = TrainingStatesRepository(app_db)

    repo.record(character.id, "flux", photo_set="p1", state="preparing", run_id="r1")
    later = repo.record(character.id, "flux", photo_set="p1", state="failed", check_name="enough_photos",
                        reason="x" * 5000, usable=2, required=5, run_id="r1")
    repo.record(character.id, "qwen-image", photo_set="p1", state="dataset_ready")

    assert repo.get(character.id, "flux") == later and later.state == "failed" and len(later.reason) == 2000
    assert set(repo.for_characters([character.id])) == {(character.id, "flux"), (character.id, "qwen-image")}
    with pytest.raises(ValueError, match="training state must be one of"):
        repo.record(character.id, "flux", photo_set="p1", state="done")


def test_migration_0004_makes_duplicate_trigger_words_unique_keeping_the_first(app_db):
    app_db.downgrade("0002")
    with app_db.engine.begin() as conn:
        for name in ("Katy", "Katy", "Other"):
            conn.execute(sa.text("insert into characters (name, lora_enabled, trigger_word, photo_keys, created_at, "
                                 "updated_at) values (:n, false, :w, '[]', current_timestamp, current_timestamp)"),
                         {"n": name, "w": "ohwx_katy" if name == "Katy" else "ohwx_other"})

    app_db.upgrade()

    words = [c.trigger_word for c in CharactersRepository(app_db).list()]
    first, second, other = words
    assert (first, other) == ("ohwx_katy", "ohwx_other") and second.startswith("ohwx_katy_") and second != first
    assert app_db.current_revision() == "0005"  # the head: 0005 chains after 0004


def test_the_unique_index_holds_against_a_direct_insert(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'app.db'}")
    db.upgrade()
    CharactersRepository(db).create("Anna")
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.text("insert into characters (name, lora_enabled, trigger_word, photo_keys, created_at, "
                             "updated_at) values ('B', false, 'ohwx_anna', '[]', current_timestamp, "
                             "current_timestamp)"))
    db.dispose()
