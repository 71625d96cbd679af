"""One home wherever a command runs from: LORA_PIPELINES_HOME, the nearest .lora_pipelines, the checkout's, the
per-user default; and a command that finds no data says where it looked instead of creating an empty home."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lora_pipelines.cli import main
from lora_pipelines.home import locate_home


def test_the_nearest_home_in_a_parent_folder_wins_over_the_checkout_and_the_user_default(tmp_path):
    project, checkout, user = tmp_path / "project", tmp_path / "checkout", tmp_path / "user"
    (project / ".lora_pipelines").mkdir(parents=True)
    (checkout / ".lora_pipelines").mkdir(parents=True)
    user.mkdir()
    deep = project / "src" / "deep"
    deep.mkdir(parents=True)

    found = locate_home(None, cwd=deep, checkout=checkout, user_default=user)

    assert (found.path, found.source) == (project / ".lora_pipelines", "found")


def test_without_a_nearby_home_the_checkout_then_the_user_default_is_used(tmp_path):
    elsewhere, checkout, user = tmp_path / "elsewhere", tmp_path / "checkout", tmp_path / "user"
    elsewhere.mkdir()
    user.mkdir()

    assert locate_home(None, cwd=elsewhere, checkout=checkout, user_default=user).path == user
    (checkout / ".lora_pipelines").mkdir(parents=True)
    assert locate_home(None, cwd=elsewhere, checkout=checkout, user_default=user).path == checkout / ".lora_pipelines"
    explicit = locate_home(tmp_path / "mine", cwd=elsewhere, checkout=checkout, user_default=user)
    assert (explicit.path, explicit.explicit) == (tmp_path / "mine", True)


def test_when_nothing_exists_a_new_home_would_go_in_the_checkout_or_the_user_default(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    in_checkout = locate_home(None, cwd=elsewhere, checkout=tmp_path / "co", user_default=tmp_path / "user")
    installed = locate_home(None, cwd=elsewhere, checkout=None, user_default=tmp_path / "user", use_checkout=False)

    assert (in_checkout.path, in_checkout.source) == (tmp_path / "co" / ".lora_pipelines", "new")
    assert (installed.path, installed.source) == (tmp_path / "user", "new")
    assert str(tmp_path / "user") in installed.looked


def _no_checkout(monkeypatch, tmp_path):
    """Commands in a folder with no home, as from an installed package (no checkout) with an empty user default."""
    monkeypatch.delenv("LORA_PIPELINES_HOME", raising=False)
    monkeypatch.delenv("LORA_PIPELINES_DATABASE_URL", raising=False)
    monkeypatch.delenv("LORA_PIPELINES_STORE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("lora_pipelines.home.checkout_root", lambda: None)
    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


def test_a_read_command_in_a_folder_without_data_says_where_it_looked_and_creates_nothing(tmp_path, monkeypatch):
    work = _no_checkout(monkeypatch, tmp_path)
    runner = CliRunner()

    for args in (["status"], ["status", "--json"], ["generate", "--character", "1", "--model", "flux", "--prompt", "x"],
                 ["report"], ["character", "list"], ["character", "show", "1"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        [line] = result.output.strip().splitlines()
        assert "no lora_pipelines data found" in line and "LORA_PIPELINES_HOME" in line, line
        assert str(work) in line and str(tmp_path / "xdg" / "lora_pipelines") in line

    assert not (work / ".lora_pipelines").exists() and not (tmp_path / "xdg").exists()
    assert list(work.iterdir()) == []


def test_character_add_makes_the_home_once_and_every_folder_below_finds_it(tmp_path, monkeypatch, faces_dir):
    from conftest import person_photos

    _no_checkout(monkeypatch, tmp_path)
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in person_photos(faces_dir, "katy_perry")[:2]:
        (photos / photo.name).write_bytes(photo.read_bytes())
    monkeypatch.setenv("LORA_PIPELINES_HOME", str(project / ".lora_pipelines"))
    runner = CliRunner()
    added = runner.invoke(main, ["character", "add", "--name", "Katy", "--photos", str(photos)])
    assert added.exit_code == 0, added.output
    assert f"new home {project / '.lora_pipelines'}" in added.stderr
    monkeypatch.delenv("LORA_PIPELINES_HOME")

    monkeypatch.chdir(project / "sub")
    status = runner.invoke(main, ["status", "--json"])

    assert status.exit_code == 0, status.output
    assert [c["name"] for c in json.loads(status.stdout)["characters"]] == ["Katy"]
    assert not (project / "sub" / ".lora_pipelines").exists()


def test_an_explicit_home_without_data_is_named_in_the_message(tmp_path, monkeypatch):
    _no_checkout(monkeypatch, tmp_path)
    monkeypatch.setenv("LORA_PIPELINES_HOME", str(tmp_path / "typo"))

    result = CliRunner().invoke(main, ["status"])

    assert result.exit_code == 1
    assert f"no app database in {tmp_path / 'typo'} (LORA_PIPELINES_HOME)" in result.output
    assert not (tmp_path / "typo").exists()
