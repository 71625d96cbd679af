"""Where this installation's data lives (LORA_PIPELINES_HOME), found the same way from any folder.

In order: LORA_PIPELINES_HOME; the nearest `.lora_pipelines` folder in the current folder or one of its parents;
the `.lora_pipelines` of the source checkout this package runs from (what `make demo` creates); the per-user
default `$XDG_DATA_HOME/lora_pipelines` (`~/.local/share/lora_pipelines`). When none exists, a new home goes in
the checkout, or else at the per-user default. Nothing here creates a folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_DIR_NAME = ".lora_pipelines"
APP_DB_NAME = "app.db"


@dataclass(frozen=True)
class HomeLocation:
    path: Path
    source: str  # LORA_PIPELINES_HOME | found | checkout | user default | new
    looked: tuple[str, ...] = ()

    @property
    def explicit(self) -> bool:
        return self.source == "LORA_PIPELINES_HOME"


def user_default_home() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "lora_pipelines"


def checkout_root() -> Path | None:
    """The source checkout this package runs from (workspace.yaml beside the package), or None when installed."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "workspace.yaml").is_file() and (root / "pyproject.toml").is_file() else None


def locate_home(explicit: Path | str | None = None, *, cwd: Path | None = None, checkout: Path | None = None,
                user_default: Path | None = None, use_checkout: bool = True) -> HomeLocation:
    """The home to use and how it was chosen (see the module docstring); `looked` lists the places tried."""
    if explicit is not None and str(explicit):
        return HomeLocation(Path(explicit).expanduser().resolve(), "LORA_PIPELINES_HOME")
    cwd = (cwd or Path.cwd()).resolve()
    if use_checkout and checkout is None:
        checkout = checkout_root()
    user_default = (user_default or user_default_home()).expanduser().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / HOME_DIR_NAME).is_dir():
            return HomeLocation(folder / HOME_DIR_NAME, "found")
    looked = [f"{HOME_DIR_NAME} in {cwd} and its parents"]
    if checkout is not None:
        candidate = checkout.resolve() / HOME_DIR_NAME
        if candidate.is_dir():
            return HomeLocation(candidate, "checkout")
        looked.append(str(candidate))
    if user_default.is_dir():
        return HomeLocation(user_default, "user default")
    looked.append(str(user_default))
    new = checkout.resolve() / HOME_DIR_NAME if checkout is not None else user_default
    return HomeLocation(new, "new", tuple(looked))


def no_data_message(location: HomeLocation) -> str:
    """One line: where the app database was looked for, and how to point the command elsewhere."""
    if location.source == "new":
        where = "LORA_PIPELINES_HOME is unset and there is no " + ", no ".join(location.looked)
    else:
        how = {"LORA_PIPELINES_HOME": "LORA_PIPELINES_HOME", "found": "the nearest .lora_pipelines folder",
               "checkout": "the project checkout's", "user default": "the per-user default"}[location.source]
        where = f"no app database in {location.path} ({how})"
    return (f"no lora_pipelines data found: {where}. Run from your project folder, set LORA_PIPELINES_HOME to the "
            "folder that holds app.db (or LORA_PIPELINES_DATABASE_URL), or start one with `lora-pipelines demo` or "
            "`lora-pipelines character add`.")
