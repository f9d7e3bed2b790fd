"""The closed loop on a real instance: logged traffic -> window sensor -> drift and live
performance -> retraining sensor (hold / recalibrate / retrain from the labels, dedup,
cooldown, skip reasons) -> the recalibrate and retrain jobs."""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import orchestration
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.resources import RetrainPolicyResource
from mlops_assets.lib.dataset import data
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.monitoring import live
from mlops_assets.lib.serving.predlog import PredictionLog
from tests.conftest import check_results, trained_project

BATCHES = ("2008-11", "2009-04", "2009-05", "2009-06")
# Two months from late 2010, served as one window: another economy, another base rate, and a
# ranking the 2008-09 model still holds (its AUC there is within a few points of validation's;
# on 2010-05..07 it is not, and the labels rightly say retrain). Then the month after.
WINDOW, NEXT = ("2010-08", "2010-09"), "2010-10"


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
    live.write_window(project.home / "monitoring" / "windows", window, start - 1,
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


def test_the_labels_decide_recalibrate_or_retrain_and_drift_only_warns(looped, bank_batches):
    project = looped
    defs = build_definitions(str(project.home), "bank",
                             retrain_policy=RetrainPolicyResource(cooldown_s=3600,
                                                                  min_new_rows=10**9))
    instance = project.instance
    first = _tick(defs, instance, "retrain_sensor")
    assert not first.run_requests and "no newly judged labelled window" in \
        first.skip_reason.skip_message
    cursor = first.cursor

    first_month, second_month = WINDOW
    _serve(project, pd.concat([bank_batches[m] for m in WINDOW]), first_month)
    waiting = _tick(defs, instance, "window_sensor")  # the log is not read yet: it waits
    assert not waiting.run_requests
    assert f"{first_month}: waiting for prediction_log" in waiting.skip_reason.skip_message
    log_cursor = _read_traffic(defs, instance)
    windows = _tick(defs, instance, "window_sensor")
    assert [r.partition_key for r in windows.run_requests] == [first_month]
    run = defs.resolve_job_def("monitor_window").execute_in_process(
        instance=instance, partition_key=first_month, raise_on_error=False)
    checks = check_results(run)
    drift_check = checks["drift_report:drift_within_limit"]
    assert not drift_check.passed and "features drifted" in drift_check.description
    report = run.output_for_node("drift_report")
    assert report["rows_current"] > 300 and report["drifted_share"] > 0.5
    performance = run.output_for_node("live_performance")
    assert performance["labelled"] == report["rows_current"]
    evidence = performance["evidence"]
    assert performance["judged_version"] == Registry(project.home).champion()
    assert evidence["labelled"] == performance["labelled"] and evidence["auc_se"] > 0

    # The labels say: ranking holds, the scores are far under the observed rate.
    assert evidence["positive_rate"] > 0.4 and evidence["calibration_gap"] < -0.2
    trigger = _tick(defs, instance, "retrain_sensor", cursor)
    assert len(trigger.run_requests) == 1
    request = trigger.run_requests[0]
    assert request.job_name == request.tags["retrain/action"] == "recalibrate", request.tags
    assert request.run_key.startswith("recalibrate:recalibrate-")
    cause = request.tags["retrain/cause"]
    assert f"window {first_month}: calibration off" in cause and "ranking holds" in cause
    assert "drift warning" in cause  # drift is named, it did not decide
    again = _tick(defs, instance, "retrain_sensor", trigger.cursor)  # same cause: no new run
    assert not again.run_requests

    # The recalibrate job on the real instance, with the month's labelled batches ingested:
    # a new version with lineage to the champion, through the same evaluation and gate.
    registry = Registry(project.home)
    champion = registry.champion()
    for key in WINDOW:
        project.land(key, bank_batches[key])
    assert all(r.success for r in project.ingest()[1])
    run = orchestration.run_job(defs, instance, request.job_name,
                                run_config=request.run_config, raise_on_error=False)
    candidate = run.output_for_node("candidate_model")
    assert candidate["recalibrated_from"] == champion
    assert set(candidate["calibration_periods"]) >= {second_month}
    assert candidate["calibration_rows"] >= 400
    new = registry.load(candidate["tag"])
    assert new.calibrator is not None and registry.get(candidate["tag"]).info.metadata[
        "recalibrated_from"] == champion
    report = run.output_for_node("gate_report")  # the same gate, on its periods' test rows
    assert report["challenger"] == candidate["tag"] and report["champion"] == champion
    assert report["recent_periods"] == sorted(candidate["calibration_periods"])
    assert report["comparison"]["auc_delta"] == pytest.approx(0, abs=1e-9)  # same ranking
    assert all(rule["passed"] for rule in report["rules"].values()), report["rules"]
    assert registry.champion() == candidate["tag"]  # promoted: it serves from now on

    # The next window is judged against the model that answered it.
    _serve(project, bank_batches[NEXT], NEXT)
    _read_traffic(defs, instance, log_cursor)
    # New labels arrived, but the first window already had a label for every prediction: only the
    # new window is due.
    due = _tick(defs, instance, "window_sensor", windows.cursor).run_requests
    assert [r.partition_key for r in due] == [NEXT]
    run = defs.resolve_job_def("monitor_window").execute_in_process(
        instance=instance, partition_key=NEXT, raise_on_error=False)
    assert run.output_for_node("live_performance")["judged_version"] == registry.champion()
    later = _tick(defs, instance, "retrain_sensor", trigger.cursor)
    # The recalibrated champion fits the next month: the labels say hold, and say why.
    assert not later.run_requests, later.run_requests
    held = later.skip_reason.skip_message
    assert f"window {NEXT}: AUC" in held and "recalibration would remove" in held, held


def test_enough_new_labelled_rows_trigger_retraining(looped, bank_batches):
    project = looped
    defs = build_definitions(str(project.home), "bank",
                             retrain_policy=RetrainPolicyResource(cooldown_s=0, min_new_rows=700))
    first = _tick(defs, project.instance, "retrain_sensor")
    assert not first.run_requests
    # Rows that cannot reach training are not new: a CRLF copy of a batch already in the
    # dataset (every row a duplicate), and a batch blocked by its check.
    landed = project.paths.landing
    (landed / "copy.csv").write_bytes(next(landed.glob("20*.csv")).read_bytes().replace(
        b"\n", b"\r\n"))
    blocked = bank_batches["2009-09"].copy()
    blocked.loc[: len(blocked) // 2, "job"] = "astronaut"
    project.land("2009-09", blocked)
    assert sorted(r.success for r in project.ingest()[1]) == [False, True]
    held = _tick(defs, project.instance, "retrain_sensor", first.cursor)
    assert not held.run_requests
    assert "0 new labelled rows" in held.skip_reason.skip_message, held.skip_reason
    project.land("2009-08", bank_batches["2009-08"])  # 770 rows
    _, runs = project.ingest()
    assert runs[0].success
    trigger = _tick(defs, project.instance, "retrain_sensor", held.cursor)
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
