"""training_job through Dagster on the simulated GPU: real photos in, a verified LoRA (or a clear failure) out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from conftest import person_photos
from lora_pipelines.domain.keys import photo_key
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from pipeline_helpers import check_results, photo_name, step_keys

pytest_plugins = ["pipeline_helpers"]


def _no_face_photo() -> bytes:
    """A landscape-like picture with no face in it."""
    image = Image.new("RGB", (480, 360), (120, 170, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 240, 480, 360), fill=(70, 130, 60))
    draw.ellipse((360, 30, 430, 100), fill=(250, 220, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_six_photos_of_one_person_give_a_ready_lora_that_inspect_lora_identifies(world):
    from lora_pipelines.cli import main

    result = world.katy_runs["flux"]
    assert result.success
    checks = check_results(result)
    assert {name: c.passed for name, c in checks.items()} == {
        "enough_photos": True, "single_identity": True, "no_duplicates": True,
        "header_valid": True, "base_model_matches": True, "checksum_matches": True, "identity_matches": True,
        "not_worse_than_active": True,
    }
    [row] = LoraModelsRepository(world.ctx.db).find_by_character_and_model(world.katy.id, "flux")
    dataset = result.output_for_node("training_dataset")
    assert len(dataset["held_out"]) == 1 and dataset["usable"] == 6  # 6 usable photos, minimum 4: one held out
    assert row.status == "ready" and row.error is None
    assert row.model_path == f"loras/flux-character-{world.katy.id}/{row.id}.safetensors"
    stored = world.home / "objects" / row.model_path

    cli = CliRunner().invoke(main, ["inspect-lora", str(stored)])

    assert cli.exit_code == 0, cli.output
    summary = json.loads(cli.output)
    assert summary["base_model"] == "flux"
    assert summary["trigger_word"] == world.katy.trigger_word == row.trigger_word
    assert summary["sha256"] == row.sha256
    header = inspect_lora_file(stored).metadata  # the file names its owner
    assert header["lora_pipelines.character_id"] == str(world.katy.id)
    assert (header["lora_pipelines.trigger_word"], header["lora_pipelines.dataset_hash"]) == (
        row.trigger_word, row.dataset_hash)
    assert summary["size_bytes"] == row.size_bytes == stored.stat().st_size
    materialized = result.asset_materializations_for_node("lora_artifact")[0].metadata
    assert materialized["status"].value == "ready" and materialized["detected_base_model"].value == "flux"


def test_both_base_models_trained_once_each(world):
    rows = LoraModelsRepository(world.ctx.db).find_by_character_id(world.katy.id)
    assert sorted((r.base_model, r.status) for r in rows) == [("flux", "ready"), ("z-image-turbo", "ready")]
    assert world.katy_spawns_after - world.katy_spawns_before == 2


def test_running_training_twice_for_a_partition_trains_once(world):
    spawns = world.spawns()

    again = world.train(world.katy.id, "flux")

    assert again.success
    assert world.spawns() == spawns, "a second run of a trained dataset must not reach the GPU"
    assert again.output_for_node("trained_lora")["already_ready"] is True
    checks = check_results(again)
    assert checks["checksum_matches"].passed and checks["header_valid"].passed
    rows = LoraModelsRepository(world.ctx.db).find_by_character_and_model(world.katy.id, "flux")
    assert [r.status for r in rows] == ["ready"]


def test_a_run_whose_training_another_run_finished_meanwhile_succeeds_without_training_again(world, monkeypatch,
                                                                                             faces_dir):
    """A retried run (or the completion sensor's) can finish the row while lora_artifact polls: this run then
    verifies the ready artifact instead of reporting the row as failed."""
    from lora_pipelines.services import training as svc

    real_wait = svc.wait_for_training

    def other_run_finishes_first(ctx, row_id, descriptor, **kwargs):
        svc.publish_artifact(ctx, row_id, real_wait(ctx, row_id, descriptor, **kwargs))
        return None  # what this run's poll sees once the row is already ready

    monkeypatch.setattr(svc, "wait_for_training", other_run_finishes_first)
    # a character of its own: training partitions are only the trained base models (flux, z-image-turbo here)
    character = world.add_character("Katy Finished Elsewhere", person_photos(faces_dir, "katy_perry"))
    spawns = world.spawns()
    result = world.train(character.id, "flux")

    assert result.success
    materialized = result.asset_materializations_for_node("lora_artifact")[0].metadata
    assert materialized["verified_only"].value is True and materialized["status"].value == "ready"
    assert all(check.passed for check in check_results(result).values())
    assert world.spawns() == spawns + 1
    rows = LoraModelsRepository(world.ctx.db).find_by_character_and_model(character.id, "flux")
    assert [r.status for r in rows] == ["ready"]


@pytest.fixture(scope="module")
def mixed_set(trained_world, faces_dir):
    """Five photos of Scarlett Johansson, one of Angelina Jolie, one with no face, one corrupt JPEG."""
    world = trained_world
    with world.active():
        scarlett = person_photos(faces_dir, "scarlett_johansson")[:5]
        angelina = person_photos(faces_dir, "angelina_jolie")[0]
        folder = world.root / "mixed_photos"
        folder.mkdir()
        (folder / "landscape.jpg").write_bytes(_no_face_photo())
        full = scarlett[0].read_bytes()
        corrupt = full[: len(full) // 3]
        (folder / "broken.jpg").write_bytes(corrupt)
        from lora_pipelines.services.characters import add_character

        character, skipped = add_character(world.ctx, "Mixed Set", [*scarlett, angelina, folder / "landscape.jpg",
                                                                    folder / "broken.jpg"], lora_enabled=True)
        # photos that reached the store another way (a cut-off upload, a character added before faces were
        # counted at `character add`) must still be dropped by the dataset step
        keys = []
        for data in (corrupt, _no_face_photo()):
            keys.append(photo_key(str(character.id), photo_name(data, ".jpg")))
            world.ctx.store.put_bytes(keys[-1], data)
        character = CharactersRepository(world.ctx.db).add_photo_keys(character.id, keys)
        result = world.train(character.id, "flux")
    return {"character": character, "skipped": skipped, "result": result, "angelina": angelina,
            "landscape": _no_face_photo(), "corrupt": corrupt}


def test_two_people_fail_the_identity_check_naming_the_outlier_and_nothing_trains(trained_world, mixed_set):
    result = mixed_set["result"]
    angelina_name = photo_name(mixed_set["angelina"].read_bytes(), ".jpg")

    checks = check_results(result)
    assert checks["enough_photos"].passed
    identity = checks["single_identity"]
    assert not identity.passed
    outliers = identity.metadata["outliers"].value
    assert [o["name"] for o in outliers] == [angelina_name]
    assert outliers[0]["distance"] > 0.6
    assert "trained_lora" not in step_keys(result, "STEP_SUCCESS")
    assert "trained_lora" not in step_keys(result, "STEP_START")
    assert LoraModelsRepository(trained_world.ctx.db).find_by_character_id(mixed_set["character"].id) == []


def test_no_face_and_corrupt_photos_are_dropped_with_reasons(trained_world, mixed_set):
    skipped = sorted(mixed_set["skipped"])
    assert len(skipped) == 2 and "broken.jpg: not an image" in skipped[0] and "landscape.jpg: no face" in skipped[1]

    dataset = mixed_set["result"].output_for_node("training_dataset")
    reasons = {d["name"]: d["reason"] for d in dataset["dropped"]}
    assert reasons == {
        photo_name(mixed_set["landscape"], ".jpg"): "no_face",
        photo_name(mixed_set["corrupt"], ".jpg"): "corrupt_image",
    }
    assert dataset["usable"] == 6
    manifest = json.loads(trained_world.ctx.store.get_bytes(f"{dataset['prefix']}/manifest.json"))
    assert {d["name"]: d["reason"] for d in manifest["dropped"]} == reasons
    assert all(d["detail"] for d in manifest["dropped"])
    table = mixed_set["result"].asset_materializations_for_node("training_dataset")[0].metadata["dropped"].value
    assert sorted(r.data["reason"] for r in table.records) == ["corrupt_image", "no_face"]


def _katy_copy(world, faces_dir, name: str):
    """A new character with Katy's photos: a new partition and dataset row, without new face analysis."""
    return world.add_character(name, person_photos(faces_dir, "katy_perry"))


def test_a_failed_training_call_marks_the_row_failed_with_its_reason(world, faces_dir):
    character = _katy_copy(world, faces_dir, "Katy Failing")
    world.set_faults({"endpoints": {"spawn": {"fail_training": "CUDA out of memory"}}})
    spawns = world.spawns()

    result = world.train(character.id, "flux")

    assert not result.success
    [row] = LoraModelsRepository(world.ctx.db).find_by_character_id(character.id)
    assert row.status == "failed"
    assert "CUDA out of memory" in row.error
    assert world.spawns() == spawns + 1
    assert "lora_artifact" not in step_keys(result, "STEP_SUCCESS")


def test_a_lost_call_is_resubmitted_once_not_twice(world, faces_dir):
    character = _katy_copy(world, faces_dir, "Katy Lost")
    world.set_faults({"endpoints": {"spawn": {"lost_call": True}}})
    spawns = world.spawns()

    result = world.train(character.id, "z-image-turbo")

    assert not result.success
    assert world.spawns() == spawns + 2, "one submission, one resubmission after the loss, no more"
    [row] = LoraModelsRepository(world.ctx.db).find_by_character_id(character.id)
    assert row.status == "failed" and row.attempt == 2
    assert "lost 2 times" in row.error


def test_a_lost_call_resubmitted_once_can_still_succeed(world, faces_dir):
    character = _katy_copy(world, faces_dir, "Katy Lost Once")
    world.set_faults({"endpoints": {"spawn": {"lost_call": True, "max_faults": 1}}})
    spawns = world.spawns()

    result = world.train(character.id, "flux")

    assert result.success
    assert world.spawns() == spawns + 2
    [row] = LoraModelsRepository(world.ctx.db).find_by_character_id(character.id)
    assert row.status == "ready" and row.attempt == 2
    assert Path(world.home / "objects" / row.model_path).stat().st_size == row.size_bytes
