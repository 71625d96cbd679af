"""What an operator sees when the configured services fail, and CLI output that must say where things really are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from safetensors.numpy import save_file

from conftest import person_photos
from lora_pipelines.cli import main
from lora_pipelines.domain import lora_format
from lora_pipelines.gpu.sim_launcher import free_port


def test_character_add_into_a_missing_bucket_says_what_to_check_and_leaves_no_character(
        lp_home, moto_server, faces_dir, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in person_photos(faces_dir, "katy_perry")[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    monkeypatch.setenv("LORA_PIPELINES_STORE_URL", "s3://no-such-bucket/prefix")
    monkeypatch.setenv("LORA_PIPELINES_S3_ENDPOINT_URL", moto_server)
    runner = CliRunner()

    result = runner.invoke(main, ["character", "add", "--name", "Katy", "--photos", str(folder)])

    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "NoSuchBucket" in result.output and "LORA_PIPELINES_STORE_URL" in result.output
    assert "Traceback" not in result.output
    status = runner.invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["characters"] == []


def test_an_unreachable_database_is_one_line_without_the_password(lp_home, monkeypatch):
    monkeypatch.setenv("LORA_PIPELINES_DATABASE_URL", f"postgresql://app:s3cr3t-pw@127.0.0.1:{free_port()}/app")

    result = CliRunner().invoke(main, ["status"])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "app database postgresql" in result.output and "app:***@127.0.0.1:" in result.output
    assert "LORA_PIPELINES_DATABASE_URL" in result.output
    assert "s3cr3t-pw" not in result.output


def test_workflow_build_with_a_lora_opens_the_prompt_with_its_trigger_word(tmp_path):
    path = tmp_path / "7.safetensors"
    tensors = {k: np.zeros(s, np.float16) for k, s in lora_format.lora_tensor_shapes("z-image-turbo", 4).items()}
    save_file(tensors, path, metadata=lora_format.trainer_metadata("z-image-turbo", "ohwx_katy", rank=4, steps=1,
                                                                   trainer="test"))
    runner = CliRunner()

    with_lora = runner.invoke(main, ["workflow", "build", "--workflow", "z-image-danrisi", "--prompt", "portrait",
                                     "--lora", str(path)])
    without = runner.invoke(main, ["workflow", "build", "--workflow", "z-image-danrisi", "--prompt", "portrait"])

    assert with_lora.exit_code == 0 and without.exit_code == 0, with_lora.output + without.output
    texts = [node["inputs"]["text"] for node in json.loads(with_lora.output).values()
             if node["class_type"] == "CLIPTextEncode"]
    assert "ohwx_katy, portrait" in texts
    assert "ohwx_katy" not in without.output


def test_inspect_lora_on_a_non_safetensors_file_names_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is a README, not a LoRA\n" * 4)

    result = CliRunner().invoke(main, ["inspect-lora", str(path)])

    assert result.exit_code == 2
    assert f"({path} is not a readable LoRA .safetensors file)" in result.stderr


def test_the_demo_names_the_database_and_store_it_really_uses(lp_home, s3_bucket, postgres_url, monkeypatch):
    from lora_pipelines.demo.scenario import where_it_lives
    from lora_pipelines.services.context import PipelineContext

    endpoint, bucket = s3_bucket
    monkeypatch.setenv("LORA_PIPELINES_DATABASE_URL", postgres_url)
    monkeypatch.setenv("LORA_PIPELINES_STORE_URL", f"s3://{bucket}/demo")
    monkeypatch.setenv("LORA_PIPELINES_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("DAGSTER_HOME", str(lp_home / "dagster_home"))

    line = where_it_lives(Path(lp_home), PipelineContext.from_settings())

    assert f"object store s3://{bucket}/demo" in line
    assert "app database postgresql" in line
    assert "under it" not in line
