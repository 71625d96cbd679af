"""`lora-pipelines character ...` as an operator uses it, on real photos and a real store (a folder, and S3 on moto's
server): each case ends in a clear state (`status`, `character show`) or a one-line message."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conftest import person_photos
from lora_pipelines.cli import main
from lora_pipelines.planning.training import CharacterCursor, plan_new_character_training
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository


def _folder(tmp_path: Path, name: str, photos: list[Path]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder


def _cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _status() -> dict:
    result = _cli("status", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_same_name_twice_is_refused_unless_allowed_and_trigger_words_stay_unique(lp_home, faces_dir, tmp_path):
    katy = _folder(tmp_path, "katy", person_photos(faces_dir, "katy_perry")[:2])

    first = _cli("character", "add", "--name", "Katy Perry", "--photos", str(katy))
    again = _cli("character", "add", "--name", "katy perry", "--photos", str(katy))
    allowed = _cli("character", "add", "--name", "Katy Perry", "--photos", str(katy), "--allow-duplicate-name")
    taken = _cli("character", "add", "--name", "Other", "--photos", str(katy), "--trigger-word", "ohwx_katy_perry")

    assert first.exit_code == 0 and allowed.exit_code == 0, first.output + allowed.output
    assert again.exit_code == 1
    [line] = again.stderr.strip().splitlines()
    assert "character 1 is already named 'Katy Perry'" in line and "character add-photos 1" in line
    assert taken.exit_code == 1 and "trigger word 'ohwx_katy_perry' is taken by character 1" in taken.stderr
    words = [c["trigger_word"] for c in _status()["characters"]]
    assert words == ["ohwx_katy_perry", "ohwx_katy_perry_2"]


def test_too_few_usable_photos_say_so_at_add_and_in_status(lp_home, faces_dir, tmp_path):
    folder = _folder(tmp_path, "jack", person_photos(faces_dir, "jack_dorsey")[:2])
    (folder / "icon.png").write_bytes(_icon())

    added = _cli("character", "add", "--name", "Jack", "--photos", str(folder), "--lora-enabled")

    assert added.exit_code == 0, added.output
    assert "skipped: icon.png: no face found" in added.stderr
    assert ("cannot be trained yet: 2 of 5 usable photos (one clear face each) (1 skipped); add 3 more with "
            "`lora-pipelines character add-photos 1 --photos DIR`") in added.stderr
    [jack] = _status()["characters"]
    assert [s["base_model"] for s in jack["training"]] == ["z-image-turbo", "flux", "qwen-image"]
    assert {(s["state"], s["usable_photos"], s["required_photos"]) for s in jack["training"]} == {
        ("waiting_for_photos", 2, 5)}
    text = _cli("status").stdout
    assert "z-image-turbo: waiting 2/5 photos · flux: waiting 2/5 photos" in text
    assert "z-image-turbo, flux, qwen-image: 2 of 5 usable photos: add 3 more" in text  # one line per reason
    # the sensor requests nothing for it, and says why
    ctx = PipelineContext.from_settings()
    _, requests, _ = plan_new_character_training(ctx.db, CharacterCursor(), base_models=["flux"], min_photos=5)
    assert requests == []


def test_update_add_photos_and_disable_change_the_state_and_the_run_key(lp_home, faces_dir, tmp_path):
    photos = person_photos(faces_dir, "katy_perry")
    _cli("character", "add", "--name", "Katy", "--photos", str(_folder(tmp_path, "a", photos[:5])), "--lora-enabled")
    _cli("character", "add", "--name", "Kit", "--photos", str(_folder(tmp_path, "b", photos[:1])))
    ctx = PipelineContext.from_settings()

    def run_keys() -> set[str]:
        _, requests, _ = plan_new_character_training(ctx.db, CharacterCursor(), base_models=["flux"], min_photos=5)
        return {r.run_key for r in requests}

    before = run_keys()
    renamed = _cli("character", "update", "1", "--name", "Katy Perry")
    clash = _cli("character", "update", "2", "--name", "katy perry")
    more = _cli("character", "add-photos", "1", "--photos", str(_folder(tmp_path, "c", photos[4:])))
    same = _cli("character", "add-photos", "1", "--photos", str(_folder(tmp_path, "d", photos[5:])))
    after = run_keys()

    assert renamed.exit_code == 0 and "character 1 'Katy Perry': trigger word 'ohwx_katy'" in renamed.stdout
    assert clash.exit_code == 1 and "already named 'Katy Perry'" in clash.stderr
    assert more.exit_code == 0
    assert f"{len(photos) - 5} new photos, 1 already stored, {len(photos)} in all" in more.stdout
    assert same.exit_code == 0 and "0 new photos" in same.stdout and "nothing is trained again" in same.stderr
    assert len(before) == len(after) == 1 and before != after, "new photos: a new run key"

    shown = json.loads(_cli("character", "show", "1", "--json").stdout)
    assert shown["name"] == "Katy Perry" and shown["photos"] == len(photos)
    assert all(u.startswith("file://") and Path(u[7:]).is_file() for u in shown["photo_urls"])
    assert {s["state"] for s in shown["training"]} == {"queued"}

    disabled = _cli("character", "update", "1", "--no-lora-enabled")
    assert disabled.exit_code == 0 and "no new trainings are requested" in disabled.stderr
    assert run_keys() == set()
    assert {s["state"] for s in _status()["characters"][0]["training"]} == {"disabled"}
    listed = _cli("character", "list").stdout
    assert "Katy Perry" in listed and "ohwx_katy" in listed and "off" in listed


def test_unknown_ids_and_busy_characters_are_one_line_errors(lp_home, faces_dir, tmp_path):
    _cli("character", "add", "--name", "Katy", "--photos",
         str(_folder(tmp_path, "a", person_photos(faces_dir, "katy_perry")[:1])))
    ctx = PipelineContext.from_settings()
    lora = LoraModelsRepository(ctx.db).create(1, "flux", "ohwx_katy", "k", "h", "ai-toolkit")
    LoraModelsRepository(ctx.db).transition(lora.id, "training", gpu_call_id="fc-1")

    for args, message in ((("character", "show", "9"), "character 9 does not exist"),
                          (("character", "update", "9", "--name", "X"), "character 9 does not exist"),
                          (("character", "add-photos", "9", "--photos", str(tmp_path / "a")), "character 9 does"),
                          (("character", "remove", "9"), "character 9 does not exist"),
                          (("character", "remove", "1"), "has trainings in flight (lora_models 1 (flux))")):
        result = _cli(*args)
        assert result.exit_code == 1, args
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and message in line, (args, line)
    assert _cli("character", "update", "1").exit_code == 2  # nothing to change: a usage error
    assert CharactersRepository(ctx.db).get(1) is not None


def _seed_objects(ctx, character_id: int) -> list[str]:
    """Photos, a dataset, a LoRA file and a generated image of a character, under its own keys."""
    (job,) = GenerationJobsRepository(ctx.db).enqueue(character_id, "flux", "p")
    keys = [f"characters/{character_id}/photos/x.jpg", f"datasets/flux-character-{character_id}/h/dataset.zip",
            f"loras/flux-character-{character_id}/3.safetensors", f"generations/{job}/000.png"]
    for key in keys:
        ctx.store.put_bytes(key, key.encode())
    return keys


def _remove_only_its_own(ctx, keep_files: bool) -> None:
    """Character 1 is removed; character 11 (whose prefixes character 1's are string prefixes of) keeps it all."""
    repo = CharactersRepository(ctx.db)
    while repo.count() < 11:
        repo.create(f"C{repo.count() + 1}")
    first, eleventh = repo.get(1), repo.get(11)
    mine, theirs = _seed_objects(ctx, first.id), _seed_objects(ctx, eleventh.id)
    jobs = len(GenerationJobsRepository(ctx.db).list(character_id=first.id))
    mine += [key for j in GenerationJobsRepository(ctx.db).list(character_id=first.id)
             for key in j.output_keys if key not in mine]

    args = ["character", "remove", str(first.id)] + (["--keep-files"] if keep_files else [])
    result = _cli(*args)

    assert result.exit_code == 0, result.output
    assert f"removed character 1 {first.name!r}: 0 LoRAs, {jobs} generation jobs" in result.stdout
    assert all(ctx.store.exists(k) for k in theirs), "another character's objects are never touched"
    assert all(ctx.store.exists(k) == keep_files for k in mine)
    assert (f"kept its {len(mine)} stored files" if keep_files else f"deleted its {len(mine)} stored files") \
        in result.stdout
    status = _status()
    assert [c["id"] for c in status["characters"]] == list(range(2, 12))
    assert {j["character_id"] for j in status["generation_jobs"]} == {eleventh.id}


@pytest.mark.parametrize("keep_files", [False, True])
def test_remove_deletes_its_rows_and_only_its_objects_in_a_folder_store(lp_home, keep_files):
    assert _cli("db", "upgrade").exit_code == 0
    _remove_only_its_own(PipelineContext.from_settings(), keep_files)


def test_remove_and_output_urls_on_s3(lp_home, s3_bucket, monkeypatch):
    endpoint, bucket = s3_bucket
    monkeypatch.setenv("LORA_PIPELINES_STORE_URL", f"s3://{bucket}/lp")
    monkeypatch.setenv("LORA_PIPELINES_S3_ENDPOINT_URL", endpoint)
    assert _cli("db", "upgrade").exit_code == 0
    ctx = PipelineContext.from_settings()
    character = CharactersRepository(ctx.db).create("Dana")
    (job,) = GenerationJobsRepository(ctx.db).enqueue(character.id, "flux", "p")
    GenerationJobsRepository(ctx.db).claim(job, "w")
    GenerationJobsRepository(ctx.db).finish(job, "succeeded", mode="standard",
                                            output_keys=[f"generations/{job}/000.png"])
    ctx.store.put_bytes(f"generations/{job}/000.png", b"\x89PNG image bytes")

    [shown] = _status()["generation_jobs"]
    [url] = shown["output_urls"]
    assert url.startswith(endpoint) and "X-Amz-Signature=" in url
    assert shown["output_keys"] == [f"generations/{job}/000.png"]
    assert httpx.get(url, timeout=10).content == b"\x89PNG image bytes"  # presigned: it opens without credentials
    text = _cli("status").stdout  # the text status has an output column (signed again: compare the object's URL)
    assert f"{url.split('?')[0]}?X-Amz-Algorithm=" in text

    _remove_only_its_own(ctx, keep_files=False)


def _icon() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (256, 256), (255, 255, 255, 0))
    ImageDraw.Draw(image).ellipse((32, 32, 224, 224), fill=(30, 120, 220, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
