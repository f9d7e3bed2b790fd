"""Driving the real Dagster instance from Python: the demo, the CLI and the tests use these so
they go through the same sensor and jobs a person triggers from the UI."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mlops_assets.config import PROJECT_ROOT

DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"


def ensure_dagster_home(home: Path) -> Path:
    """Make ``home`` a DAGSTER_HOME whose dagster.yaml is the repository's (a symlink)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not (link.is_symlink() and link.resolve() == DAGSTER_YAML):
        link.unlink(missing_ok=True)
        link.symlink_to(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def tick_landing_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate the landing sensor once against ``instance`` and register new partitions."""
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def run_requests(
    defs: dg.Definitions, instance: dg.DagsterInstance, result: dg.SensorResult
) -> list[dg.ExecuteInProcessResult]:
    """Execute a sensor's run requests in this process, tagged as the daemon would tag them."""
    job = defs.resolve_job_def("ingest_batch")
    outcomes = []
    for request in result.run_requests or []:
        tags = {**request.tags, "dagster/run_key": request.run_key or ""}
        outcomes.append(
            job.execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=tags,
                raise_on_error=False,
            )
        )
    return outcomes


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_job(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, quiet: bool = False,
    run_config: dict | None = None, **kwargs
) -> dg.ExecuteInProcessResult:
    """Execute a job in this process on ``instance``; ``quiet`` keeps the console to warnings
    (the full event log is in the instance either way)."""
    config = {**(run_config or {}), **(QUIET if quiet else {})}
    return defs.resolve_job_def(name).execute_in_process(
        instance=instance, run_config=config or None, **kwargs
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Why a run failed, in one line, for a command-line user: the failed blocking checks
    with their reasons, else the first failed step's error."""
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed
              and e.severity == dg.AssetCheckSeverity.ERROR]
    if failed:
        return "; ".join(f"check {e.check_name} on {e.asset_key.to_user_string()} failed: "
                         f"{e.description}" for e in failed)
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            error = error.cause or error  # the user code's exception, not Dagster's wrapper
            return f"{event.step_key}: {error.message.strip()}"
    return "run failed (see the run's events in the UI)"
