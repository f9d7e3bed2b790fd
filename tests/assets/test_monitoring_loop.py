"""The closed loop on a real instance: logged traffic -> window sensor -> drift and live
performance checks -> retraining sensor (trigger, dedup, cooldown, skip reasons)."""

from __future__ import annotations

import json
import time

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import orchestration
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.resources import RetrainPolicyResource
from mlops_assets.lib import data, monitoring
from mlops_assets.lib.predlog import PredictionLog
from mlops_assets.lib.registry import Registry
from tests.conftest import check_results, trained_project

BATCHES = ("2008-11", "2009-04", "2009-05", "2009-06")


def _tick(defs, instance, name, cursor=None):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                 resources=defs.resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return dg.SensorResult(skip_reason=result, cursor=cursor)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _read_traffic(defs, instance, log_cursor=None):
    """What the daemon does after traffic and labels arrive: the prediction-log sensor's
    days and the feedback sensor's labels are materialized, in order."""
    logs = _tick(defs, instance, "prediction_log_sensor", log_cursor)
    for request in logs.run_requests:
        assert defs.resolve_job_def("ingest_prediction_log").execute_in_process(
            instance=instance, partition_key=request.partition_key).success
    if _tick(defs, instance, "feedback_sensor").run_requests:
        assert defs.resolve_job_def("ingest_feedback").execute_in_process(
            instance=instance).success
    return logs.cursor


def _serve(project, rows: pd.DataFrame, window: str) -> list[str]:
    """Score rows with the champion and log them as the service would; define the window."""
    contract = project.contract
    model = Registry(project.home).load(Registry(project.home).champion())
    valid = data.validate_rows(data.parse_batch(rows, contract, window), contract).valid
    probs = model.predict_columns({c: valid[c].tolist() for c in contract.features})
    log = PredictionLog(project.home / "predictions")
    start = time.time()
    ids = [f"{window}-{i}" for i in range(len(valid))]
    log.write([{"ts": time.time(), "request_id": rid, "model_version": model.version,
                "variant": "champion",
                "inputs": {c: (None if pd.isna(valid[c].iat[i]) else valid[c].iat[i])
                           for c in contract.features},
                "probability": float(p), "label": int(p >= model.threshold), "latency_ms": 1.0}
               for i, (rid, p) in enumerate(zip(ids, probs, strict=True))])
    log.close()
    monitoring.write_window(project.home / "monitoring" / "windows", window, start - 1,
                            time.time() + 0.01)
    feedback = project.home / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"request_id": ids, "y": valid["_target"].map({1: "yes", 0: "no"})}).to_csv(
        feedback / f"{window}.csv", index=False)
    time.sleep(0.05)
    return ids


@pytest.fixture
def looped(tmp_path, monkeypatch, bank_batches):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    project, _ = trained_project(tmp_path, bank_batches, BATCHES, trials=2)
    yield project
    project.instance.dispose()


def test_drift_triggers_one_retraining_then_cooldown(looped, bank_batches):
    project = looped
    defs = build_definitions(str(project.home), "bank",
                             retrain_policy=RetrainPolicyResource(cooldown_s=3600,
                                                                  min_new_rows=10**9))
    instance = project.instance
    first = _tick(defs, instance, "retrain_sensor")
    assert not first.run_requests and "no failed drift or live-performance check" in \
        first.skip_reason.skip_message
    cursor = first.cursor

    # A month from 2010: different economy, different base rate.
    _serve(project, pd.concat([bank_batches["2010-05"], bank_batches["2010-06"]]), "2010-05")
    waiting = _tick(defs, instance, "window_sensor")  # the log is not read yet: it waits
    assert not waiting.run_requests
    assert "2010-05: waiting for prediction_log" in waiting.skip_reason.skip_message
    log_cursor = _read_traffic(defs, instance)
    windows = _tick(defs, instance, "window_sensor")
    assert [r.partition_key for r in windows.run_requests] == ["2010-05"]
    run = defs.resolve_job_def("monitor_window").execute_in_process(
        instance=instance, partition_key="2010-05", raise_on_error=False)
    checks = check_results(run)
    drift_check = checks["drift_report:drift_within_limit"]
    assert not drift_check.passed and "features drifted" in drift_check.description
    live = checks["live_performance:live_performance_above_floors"]
    assert not live.passed and "calibration gap" in live.description
    report = run.output_for_node("drift_report")
    assert report["rows_current"] > 300 and report["drifted_share"] > 0.5
    assert run.output_for_node("live_performance")["labelled"] == report["rows_current"]

    trigger = _tick(defs, instance, "retrain_sensor", cursor)
    assert len(trigger.run_requests) == 1
    run_key = trigger.run_requests[0].run_key
    assert run_key.startswith("retrain:check-")
    state = json.loads(trigger.cursor)
    assert state["last_launch"] is not None
    again = _tick(defs, instance, "retrain_sensor", trigger.cursor)  # same cause: no new run
    assert not again.run_requests and "after record" in again.skip_reason.skip_message

    # Another failing window inside the cooldown waits, and says so.
    _serve(project, bank_batches["2010-07"], "2010-07")
    _read_traffic(defs, instance, log_cursor)
    # New labels arrived, but 2010-05 already had a label for every prediction: only the
    # new window is due.
    due = _tick(defs, instance, "window_sensor", windows.cursor).run_requests
    assert [r.partition_key for r in due] == ["2010-07"]
    defs.resolve_job_def("monitor_window").execute_in_process(
        instance=instance, partition_key="2010-07", raise_on_error=False)
    cooling = _tick(defs, instance, "retrain_sensor", trigger.cursor)
    assert not cooling.run_requests
    assert cooling.skip_reason.skip_message.startswith("cooldown:")
    assert "window 2010-07" in cooling.skip_reason.skip_message


def test_enough_new_labelled_rows_trigger_retraining(looped, bank_batches):
    project = looped
    defs = build_definitions(str(project.home), "bank",
                             retrain_policy=RetrainPolicyResource(cooldown_s=0, min_new_rows=700))
    first = _tick(defs, project.instance, "retrain_sensor")
    assert not first.run_requests
    project.land("2009-08", bank_batches["2009-08"])  # 770 rows
    _, runs = project.ingest()
    assert runs[0].success
    trigger = _tick(defs, project.instance, "retrain_sensor", first.cursor)
    assert len(trigger.run_requests) == 1
    assert trigger.run_requests[0].run_key.startswith("retrain:rows-")
    assert "new labelled rows (>= 700)" in trigger.run_requests[0].tags["retrain/cause"]
    # The retraining job itself runs: dataset rebuilt with the new batch, a new challenger.
    result = orchestration.run_job(project.defs, project.instance, "retrain",
                                   raise_on_error=False,
                                   run_config={"ops": {"candidate_model": {"config": {
                                       "n_trials": 2}}}})
    batches = result.output_for_node("candidate_model")["data_versions"]
    assert "2009-08" in batches
