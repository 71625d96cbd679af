"""Training states through the real pipeline (sensors, runs, checks, the simulated GPU service): every case the
issue found silent now ends in a state with its reason, in `status --json` and on the partition in Dagster."""

from __future__ import annotations

import json
import time

import dagster as dg
import pytest
from click.testing import CliRunner

from lora_pipelines.cli import main
from lora_pipelines.demo.sensor_runs import apply_sensor_result
from lora_pipelines.domain.keys import photo_key
from lora_pipelines.partitions import partition_key
from lora_pipelines.store.characters import CharactersRepository
from pipeline_helpers import open_world, person_photos, photo_name

NO_FACE_COLOURS = ((40, 90, 160), (200, 180, 40), (20, 20, 20), (230, 230, 230))


@pytest.fixture(scope="module")
def states_world(tmp_path_factory):
    with open_world(tmp_path_factory.mktemp("states_world")) as world:
        yield world


@pytest.fixture()
def world(states_world):
    with states_world.active():
        states_world.set_faults({})
        yield states_world
        states_world.set_faults({})


def _training(character_id: int) -> dict[str, dict]:
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    [character] = [c for c in data["characters"] if c["id"] == character_id]
    return {state["base_model"]: state for state in character["training"]}


def _faceless(colour) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (640, 480), colour).save(out, format="JPEG")
    return out.getvalue()


def _tick(world, cursor=None) -> dg.SensorResult:
    result = world.evaluate_sensor("new_characters", cursor)
    apply_sensor_result(world.instance, result)
    return result


def test_photos_without_a_usable_face_end_waiting_for_photos_naming_the_failing_check(world, faces_dir):
    """A character from before faces were counted at `character add`: its run fails enough_photos, and says so."""
    character = world.add_character("Legacy Faceless", person_photos(faces_dir, "rose_leslie")[:1])
    keys = []
    for colour in NO_FACE_COLOURS:
        data = _faceless(colour)
        keys.append(photo_key(str(character.id), photo_name(data, ".jpg")))
        world.ctx.store.put_bytes(keys[-1], data)
    CharactersRepository(world.ctx.db).add_photo_keys(character.id, keys)

    world.add_partition(character.id)
    result = world.run_job("training_job", partition_key=partition_key(character.id, "flux"))

    assert not result.success
    flux = _training(character.id)["flux"]
    assert (flux["state"], flux["check"], flux["usable_photos"], flux["required_photos"]) == (
        "waiting_for_photos", "enough_photos", 1, 4)
    assert flux["reason"].startswith("enough_photos: 1 of 4 usable photos; dropped ") and "(no_face)" in flux["reason"]
    assert flux["run_id"] == result.run_id
    assert _training(character.id)["z-image-turbo"]["state"] == "queued"  # no run for it yet: it waits for the sensor
    metadata = result.asset_materializations_for_node("training_dataset")[0].metadata
    assert metadata["character"].value == f"{character.id} Legacy Faceless"


def test_too_few_photos_never_train_and_the_partition_says_why_until_photos_are_added(world, faces_dir):
    from lora_pipelines.services.character_management import add_photos

    start = world.evaluate_sensor("new_characters").cursor
    photos = person_photos(faces_dir, "matt_damon")
    character = world.add_character("Matt Few", photos[:2])

    waiting = _tick(world, start)

    assert [r for r in waiting.run_requests if r.tags["lora_pipelines/character"] == str(character.id)] == []
    assert f"character {character.id} 'Matt Few' flux: waiting_for_photos: 2 of 4 usable photos" in \
        waiting.skip_reason.skip_message
    observed = world.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("training_dataset"),
                              asset_partitions=[partition_key(character.id, "flux")]), limit=5).records
    [latest] = observed[:1]
    meta = latest.asset_observation.metadata
    assert (meta["character"].value, meta["state"].value, meta["usable_photos"].value) == (
        f"{character.id} Matt Few", "waiting_for_photos", 2)
    assert {s["state"] for s in _training(character.id).values()} == {"waiting_for_photos"}

    add_photos(world.ctx, character.id, photos[2:])
    queued = _tick(world, waiting.cursor)

    mine = [r for r in queued.run_requests if r.tags["lora_pipelines/character"] == str(character.id)]
    assert {r.partition_key.keys_by_dimension["base_model"] for r in mine} == {"flux", "z-image-turbo"}
    assert all(r.tags["lora_pipelines/character_name"] == "Matt Few" for r in mine)
    assert {s["state"] for s in _training(character.id).values()} == {"queued"}


def test_a_gpu_error_is_failed_with_the_gpu_reason(world, faces_dir):
    character = world.add_character("Scarlett Gpu Fails", person_photos(faces_dir, "scarlett_johansson"))
    world.set_faults({"endpoints": {"spawn": {"fail_training": "CUDA out of memory"}}})

    result = world.train(character.id, "flux")

    assert not result.success
    flux = _training(character.id)["flux"]
    assert flux["state"] == "failed" and "CUDA out of memory" in flux["reason"] and flux["lora_model_id"]


def test_a_run_that_fails_before_its_row_records_it_is_failed_with_the_run_and_step(world, faces_dir):
    """The GPU refuses the submit: the row stays pending, the run fails; training_failures records why."""
    character = world.add_character("Jennifer Refused", person_photos(faces_dir, "jennifer_aniston"))
    world.set_faults({"endpoints": {"spawn": {"error_rate": 1.0, "error_statuses": [400]}}})
    result = world.train(character.id, "z-image-turbo")
    assert not result.success
    assert _training(character.id)["z-image-turbo"]["state"] == "queued"  # a pending row: looks queued...

    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    run = world.instance.get_run_by_id(result.run_id)
    sensor = world.defs.resolve_sensor_def("training_failures")
    with dg.build_run_status_sensor_context(sensor_name="training_failures", dagster_event=failure,
                                            dagster_instance=world.instance, dagster_run=run,
                                            resources=world.defs.resources) as context:
        sensor(context)

    state = _training(character.id)["z-image-turbo"]
    assert state["state"] == "failed" and state["run_id"] == result.run_id  # ...until the failure is recorded
    assert state["reason"].startswith(f"run {result.run_id[:8]} failed in trained_lora: ")
    assert "400" in state["reason"]


def test_removing_a_character_deletes_its_partitions(world, faces_dir):
    photos = person_photos(faces_dir, "sundar_pichai")
    by_cli = world.add_character("Sundar Cli", photos)
    by_service = world.add_character("Sundar Service", photos)
    _tick(world)
    partitions = set(world.instance.get_dynamic_partitions("characters"))
    assert {str(by_cli.id), str(by_service.id)} <= partitions

    removed = CliRunner().invoke(main, ["character", "remove", str(by_cli.id)])
    from lora_pipelines.services.character_management import remove_character

    remove_character(world.ctx, by_service.id)
    assert removed.exit_code == 0, removed.output
    assert "deleted its Dagster partitions" in removed.stderr  # DAGSTER_HOME is this world's instance
    assert str(by_cli.id) not in world.instance.get_dynamic_partitions("characters")

    tick = _tick(world)

    deletes = [r for r in tick.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
    assert [list(r.partition_keys) for r in deletes] == [[str(by_service.id)]]
    assert str(by_service.id) not in world.instance.get_dynamic_partitions("characters")


def test_the_ui_gets_inline_thumbnails_in_dataset_and_generation_metadata(world, faces_dir):
    character = world.add_character("Angelina Thumbs", person_photos(faces_dir, "angelina_jolie"))
    trained = world.train(character.id, "flux")
    assert trained.success
    from lora_pipelines.store.generation_jobs import GenerationJobsRepository

    ids = GenerationJobsRepository(world.ctx.db).enqueue(character.id, "flux", "portrait", count=2)
    generated = world.generate(ids)

    crops = {k: v.value for k, v in trained.asset_materializations_for_node("training_dataset")[0].metadata.items()
             if k.startswith("crop ")}
    images = {k: v.value for k, v in generated.asset_materializations_for_node("generation_outputs")[0].metadata.items()
              if k.startswith("image #")}
    assert len(crops) >= 4 and set(images) == {f"image #{i} lora" for i in ids}
    for markdown in (*crops.values(), *images.values()):
        # shown in place by the UI (under its 1000-character limit for Markdown), not behind "[Show Markdown]"
        assert markdown.startswith("![") and "](data:image/webp;base64," in markdown and len(markdown) < 1000
    table = generated.asset_materializations_for_node("generation_outputs")[0].metadata["results"].value
    assert all(r.data["output"].startswith("file://") for r in table.records)


def test_a_training_in_flight_shows_its_progress(tmp_path, faces_dir):
    from lora_pipelines.services import training as svc

    with open_world(tmp_path, training_seconds=60) as slow, slow.active():
        character = slow.add_character("Katy In Flight", person_photos(faces_dir, "katy_perry"))
        row = svc.start_training(slow.ctx, svc.prepare_dataset(slow.ctx, character.id, "flux"))
        assert row.status == "training"
        time.sleep(1.5)

        flux = _training(character.id)["flux"]

    assert flux["state"] == "training" and flux["lora_model_id"] == row.id
    assert flux["progress"] is not None and 0 < flux["progress"] < 100
    assert f"GPU call {row.gpu_call_id} on simulated" in flux["reason"]
