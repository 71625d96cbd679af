"""Jobs a command runs on this home's Dagster instance (DAGSTER_HOME, else $LORA_PIPELINES_HOME/dagster_home):
the run, its materializations and its check results are recorded there as for any run, so `dagster dev` on the same
instance shows them. The run executes in the command's process (no daemon needed) and is tagged as launched by it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import dagster as dg

from lora_pipelines.settings import Settings

LAUNCHED_BY_TAG = "lora_pipelines/launched_by"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_instance_config(dagster_home: Path) -> None:
    """DAGSTER_HOME with the package's dagster.yaml when it has none (a checkout's is not there once installed)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_bytes((resources.files("lora_pipelines") / "templates" / "dagster.yaml").read_bytes())


@contextlib.contextmanager
def home_instance(settings: Settings, *, create: bool = True) -> Iterator[dg.DagsterInstance | None]:
    """This home's instance; None when it has none and `create` is False."""
    path = settings.dagster_home
    if not (path / "dagster.yaml").is_file():
        if not create:
            yield None
            return
        ensure_instance_config(path)
    with dg.DagsterInstance.from_config(str(path)) as instance:
        yield instance


def run_job_here(settings: Settings, job_name: str, *, run_config: dict[str, Any] | None = None,
                 tags: dict[str, str] | None = None, launched_by: str = "cli") -> dg.ExecuteInProcessResult:
    """Execute a job of the code location on this home's instance and return the result (never raises on failure:
    the caller reads `result.success`)."""
    from lora_pipelines.definitions import defs

    job = defs().resolve_job_def(job_name)
    with home_instance(settings) as instance:
        return job.execute_in_process(
            instance=instance, run_config={**QUIET, **(run_config or {})},
            tags={**(tags or {}), LAUNCHED_BY_TAG: launched_by}, raise_on_error=False,
        )


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The plain values of the metadata of the asset's (op-named) materialization in this run ({} when none)."""
    for materialization in result.asset_materializations_for_node(asset):
        return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return {}


def step_failure_text(event: dg.DagsterEvent) -> str:
    """A step failure on one line: its error, and the root cause when a wrapper (retries, checks) hides it."""
    error = getattr(event.event_specific_data, "error", None)
    lines = []
    while error is not None:
        first = (error.message or "").strip().splitlines()
        if first and first[0] not in lines:
            lines.append(first[0])
        error = error.cause
    if not lines and event.message:
        lines = event.message.strip().splitlines()[:1]
    return " <- ".join([lines[0], lines[-1]] if len(lines) > 1 else lines) or "failed"


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure of a run, on one line."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            return f"{event.step_key}: {step_failure_text(event)}"
    return "the run failed"


def delete_character_partition(settings: Settings, character_id: int) -> bool:
    """Drop a removed character's partition now, when this home has an instance (the sensor does it otherwise)."""
    with home_instance(settings, create=False) as instance:
        if instance is None or not instance.has_dynamic_partition("characters", str(character_id)):
            return False
        instance.delete_dynamic_partition("characters", str(character_id))
        return True
