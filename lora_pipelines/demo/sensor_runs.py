"""The demo's stand-in for the sensor daemon: evaluate a sensor, run what it requests in this process, and tag
those runs as the daemon tags its own, so `dagster dev` on the same instance never requests them again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg

# The daemon counts a run key as used by a sensor only on a run carrying both tags (dagster._daemon.sensor,
# fetch_existing_runs). Dagster 1.13 has no public API that records a run key on a run launched outside the
# daemon, so the demo writes these two tags itself.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
LAUNCHED_BY_TAG = "lora_pipelines/launched_by"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class SensorCursors:
    """Each sensor's cursor between demo runs: a JSON file in DAGSTER_HOME next to the instance's dagster.yaml,
    or memory only (`path` None) for an ephemeral instance. The daemon keeps its own cursors."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._values: dict[str, str] = json.loads(path.read_text()) if path is not None and path.exists() else {}

    def get(self, sensor_name: str) -> str | None:
        return self._values.get(sensor_name)

    def set(self, sensor_name: str, cursor: str) -> None:
        self._values[sensor_name] = cursor
        if self.path is not None:
            self.path.write_text(json.dumps(self._values, indent=2, sort_keys=True))


def run_key_used(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def new_run_requests(instance: dg.DagsterInstance, defs: dg.Definitions, sensor_name: str, cursors: SensorCursors,
                     say: Callable[[str], None]) -> list[dg.RunRequest]:
    """One tick of the sensor: its partitions added, its cursor kept, and the requests whose key no run used yet."""
    sensor = defs.resolve_sensor_def(sensor_name)
    with dg.build_sensor_context(instance=instance, cursor=cursors.get(sensor_name), definitions=defs,
                                 resources=defs.resources) as context:
        result = sensor(context)
    apply_sensor_result(instance, result)
    if result.cursor is not None:
        cursors.set(sensor_name, result.cursor)
    requests = [r for r in result.run_requests or [] if not run_key_used(instance, r.run_key)]
    say(f"sensor {sensor_name}: {len(requests)} new run request(s)")
    return requests


def apply_sensor_result(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's result besides the runs: its asset events and partition changes."""
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.DeleteDynamicPartitionsRequest):
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
        else:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def execute_request(instance: dg.DagsterInstance, defs: dg.Definitions, job_name: str, request: dg.RunRequest,
                    say: Callable[[str], None], sensor_name: str | None = None) -> bool:
    """Run what a sensor requested, tagged as the daemon tags it: `dagster dev` on this instance then sees the
    run key as already used by that sensor (the daemon matches run key *and* sensor name) and never reruns it."""
    job = defs.resolve_job_def(job_name)
    tags = {**(request.tags or {}), RUN_KEY_TAG: request.run_key, LAUNCHED_BY_TAG: "demo"}
    if sensor_name:
        tags[SENSOR_NAME_TAG] = sensor_name
    result = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, run_config={**(request.run_config or {}), **QUIET},
        tags=tags, raise_on_error=False, asset_selection=request.asset_selection,
    )
    label = f"{job_name}" + (f" [{request.partition_key}]" if request.partition_key else "")
    say(f"  {label}: {'succeeded' if result.success else 'FAILED'} (run {result.run_id[:8]})")
    return result.success
