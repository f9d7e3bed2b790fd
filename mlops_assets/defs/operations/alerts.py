"""Alerts (lib/monitoring/alerts.py sends them): a run-failure sensor and an asset-check
sensor, both on the daemon, so the embedded default (`mlops-assets ui`, `simulate`) and the
production profile alert alike.

- ``alert_on_failed_checks`` turns every failed check evaluation into one alert naming the
  check, the asset (and partition) and the check's own reason: a blocked batch, drift over
  its limit, live performance under its floors, an unhealthy service, a gate that blocked.
  Its cursor is the event log's storage id, so no evaluation is alerted twice. Each tick it
  also sends what waits in the outboxes (a sink that was down).
- ``alert_on_run_failure`` turns every failed run into one alert naming the job, the failed
  step and its error, unless the run failed because a check failed (that check's alert says
  it, with the check's reason) or only because the runs it started did.

At most one alert per cause per ``MLOPS_ALERT_MIN_INTERVAL_S`` (default 900 s); with no sink
set, nothing is sent and the sensors' ticks say so in the UI.
"""

from __future__ import annotations

import json
import os
import time

import dagster as dg

from mlops_assets.defs.ingestion.sensors import PARENT_TAG
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib import io
from mlops_assets.lib.monitoring import alerts

FIRST_LOOK_BACK_S = 600  # a check that failed while no daemon ran is still told


def _min_interval() -> float:
    return float(os.environ.get("MLOPS_ALERT_MIN_INTERVAL_S", "900"))


def _send(found: list[alerts.Alert], project: ProjectResource) -> str:
    """Rate-limit ``found``, queue it for every sink, send what is due; a sentence for the
    tick. A sink that is down only delays (lib/alerts.Outbox)."""
    sinks, problems = alerts.sinks_from_env()
    said = "".join(f"; not usable: {p}" for p in problems)
    if not sinks:
        return (f"no alert sink set (MLOPS_ALERT_WEBHOOK_URL, MLOPS_ALERT_SMTP_URL): "
                f"{len(found)} alert(s) not sent" + (f": {found[0].title}" if found else "")
                + said)
    folder = project.paths.home / "alerts"
    state_file = folder / "last_sent.json"
    last_sent = io.read_json(state_file) if state_file.is_file() else {}
    send, held = alerts.rate_limited(found, last_sent, _min_interval())
    if send:
        io.write_json(state_file, last_sent)
    outbox = alerts.Outbox(folder / "outbox")
    parts = []
    for sink in sinks:
        sent, waiting = outbox.deliver(sink, send)
        parts.append(f"{sink.name}: {sent} sent, {waiting} waiting")
    return f"{len(send)} new alert(s), {len(held)} held back by the rate limit; " + \
        "; ".join(parts) + said


def _check_alert(evaluation, run_id: str) -> alerts.Alert:
    asset = evaluation.asset_key.to_user_string()
    where = f" (partition {evaluation.partition})" if evaluation.partition else ""
    return alerts.Alert(
        cause=f"check:{asset}:{evaluation.check_name}{where}",
        title=f"check {evaluation.check_name} on {asset}{where} failed"
              + (" (blocking)" if evaluation.blocking else ""),
        reason=evaluation.description or "the check gave no reason",
        link=f"{alerts.ui_url()}/runs/{run_id}")


@dg.sensor(name="alert_on_failed_checks", minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="One notification per failed check (webhook / e-mail: "
                       "MLOPS_ALERT_WEBHOOK_URL, MLOPS_ALERT_SMTP_URL), and the retries of "
                       "alerts a sink could not take yet.")
def alert_on_failed_checks(context: dg.SensorEvaluationContext, project: ProjectResource):
    # Each check's failed executions, newest first, from the asset-check table (one id
    # sequence, on SQLite and PostgreSQL alike); the cursor is the last id told per check.
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    seen = json.loads(context.cursor) if context.cursor else None
    first = seen is None
    seen = seen or {}
    storage = context.instance.event_log_storage
    found = []
    for check in sorted(context.repository_def.asset_graph.asset_check_keys, key=str):
        name = check.to_user_string()
        failed = storage.get_asset_check_execution_history(
            check, limit=50, status={AssetCheckExecutionRecordStatus.FAILED})
        new = [r for r in failed if r.id > seen.get(name, 0) and r.event is not None
               and (not first or r.create_timestamp >= time.time() - FIRST_LOOK_BACK_S)]
        for record in sorted(new, key=lambda r: r.id):
            found.append(_check_alert(record.event.dagster_event.event_specific_data,
                                      record.run_id))
        if failed:
            seen[name] = max(seen.get(name, 0), max(r.id for r in failed))
    context.update_cursor(json.dumps(seen, sort_keys=True))
    return dg.SkipReason(_send(found, project))


def _failed_checks(instance: dg.DagsterInstance, run_id: str) -> int:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000).records
    return sum(not r.event_log_entry.dagster_event.event_specific_data.passed
               for r in records)


def _said_elsewhere(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Did the run fail because a check failed, or only because runs it started failed
    (each of which is alerted on its own)?"""
    if _failed_checks(instance, run.run_id):
        return True
    children = instance.get_runs(dg.RunsFilter(tags={PARENT_TAG: run.run_id}))
    failed = [c for c in children if c.status == dg.DagsterRunStatus.FAILURE]
    return bool(failed) and all(_failed_checks(instance, c.run_id) for c in failed)


def _run_alert(context: dg.RunFailureSensorContext) -> alerts.Alert:
    run = context.dagster_run
    steps = context.get_step_failure_events()
    if steps:
        step = steps[0]
        error = step.event_specific_data.error
        reason = (f"step {step.step_key} failed: "
                  + (error.message.strip() if error else step.message or "no message"))
    else:
        reason = context.failure_event.message or "the run failed"
    return alerts.Alert(
        cause=f"run:{run.job_name}",
        title=f"run {run.run_id[:8]} of {run.job_name} failed",
        reason=reason[:2000],
        link=f"{alerts.ui_url()}/runs/{run.run_id}")


@dg.run_failure_sensor(name="alert_on_run_failure", minimum_interval_seconds=5,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="One notification per failed run, naming the job, the "
                                   "step and its error.")
def alert_on_run_failure(context: dg.RunFailureSensorContext, project: ProjectResource):
    if _said_elsewhere(context.instance, context.dagster_run):
        return dg.SkipReason(f"run {context.dagster_run.run_id[:8]} failed on a check (or "
                             "its batches' runs did): the check's alert says why")
    return dg.SkipReason(_send([_run_alert(context)], project))


alert_sensors = [alert_on_failed_checks, alert_on_run_failure]

