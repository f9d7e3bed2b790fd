"""Monitoring: the prediction log, delayed labels, and per-window drift, live performance
and serving health with their checks; live_performance also records the evidence the
retraining sensor decides on (hold, recalibrate or retrain)."""

from collections.abc import Mapping
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlops_assets.config import TARGET
from mlops_assets.defs.metadata import frame_metadata, markdown_table, report_link
from mlops_assets.defs.resources import MonitoringResource, ProjectResource
from mlops_assets.lib import evaluation
from mlops_assets.lib.monitoring import drift, live
from mlops_assets.lib.monitoring.retraining import Evidence
from mlops_assets.lib.serving import predlog

prediction_days = dg.DynamicPartitionsDefinition(name="prediction_days")
windows = dg.DynamicPartitionsDefinition(name="monitoring_windows")


# Written outside Dagster: the service appends the prediction log, people (or the replay)
# drop label files. External assets, so the lineage shows where monitoring's data comes from:
# the packaged champion serves the traffic that is logged.
prediction_log_files = dg.AssetSpec(
    "prediction_log_files", group_name="monitoring", kinds={"json"}, deps=["bento", "champion"],
    description="JSON lines written by `bentoml serve` (the champion, and a canary if set) "
                "under predictions/date=YYYY-MM-DD/, one file per worker. No traffic yet? "
                "`mlops-assets simulate` replays later months through a real service.",
)
# The delayed labels are their own group, between ingestion and the dataset: they feed both
# the training rows (train_set joins them) and the live metrics, so in "monitoring" the
# collapsed group graph had a cycle (monitoring -> dataset -> ... -> monitoring).
feedback_files = dg.AssetSpec(
    "feedback_files", group_name="labels", kinds={"csv"},
    description="Delayed labels dropped as CSV files in feedback/ (columns: request_id and "
                "the contract's target); `mlops-assets simulate` writes them.",
)


@dg.asset(partitions_def=prediction_days, group_name="monitoring", kinds={"pandas"},
          deps=[prediction_log_files])
def prediction_log(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.Output:
    """One day of the service's prediction log (every worker's file), inputs flattened.

    Empty until there is traffic: `mlops-assets simulate --months 2` replays later months through a
    real `bentoml serve` (or send requests to one) and the monitoring runs on them."""
    root = project.paths.home / "predictions"
    # Measured before reading: if the files grow meanwhile, the window sensor sees a size
    # this materialization does not cover and waits for the next one.
    size = live.log_day_sizes(root).get(context.partition_key, 0)
    logged, torn = predlog.read_log(root, context.partition_key)
    rows = live.flatten(logged)
    if len(torn):
        context.log.warning(f"{len(torn)} torn lines set aside: {torn.to_dict('records')}")
    by_version = rows.groupby(["model_version", "variant"]).size().reset_index(name="rows") \
        if len(rows) else pd.DataFrame()
    return dg.Output(rows, metadata={
        **frame_metadata(rows),
        "log_bytes": size,
        "by_model_version": markdown_table(by_version) if len(by_version) else "none",
        "torn_lines": len(torn),
        "torn_lines_detail": markdown_table(torn) if len(torn) else "none",
    })


@dg.asset(group_name="labels", kinds={"pandas"}, deps=[feedback_files])
def feedback_labels(project: ProjectResource) -> dg.Output:
    """Delayed ground truth: every label file in the feedback folder, by request id."""
    folder = project.paths.home / "feedback"
    files = live.fingerprint(folder, "*.csv")  # before reading, as for the log
    labels = live.read_feedback(folder, project.contract())
    return dg.Output(labels, metadata={
        **frame_metadata(labels),
        "files": ", ".join(sorted(labels["file"].unique())) if len(labels) else "none",
        "files_fingerprint": files,
        "positive_rate": round(float(labels["_target"].mean()), 4) if len(labels) else 0.0,
    })


def _window(context, project: ProjectResource) -> live.Window:
    found = live.read_windows(project.paths.home / "monitoring" / "windows")
    if context.partition_key not in found:
        raise ValueError(f"no window definition file for {context.partition_key!r} in "
                         f"{project.paths.home / 'monitoring' / 'windows'}")
    return found[context.partition_key]


@dg.asset(partitions_def=windows, group_name="monitoring", kinds={"pandas"},
          ins={"prediction_log": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(),
                                            dagster_type=dg.Any)})
def window_traffic(context: dg.AssetExecutionContext, prediction_log: Mapping[str, pd.DataFrame],
                   project: ProjectResource) -> dg.Output:
    """The predictions logged inside one monitoring window (a named time range), from the
    prediction-log days it touches (only those are read).

    Empty until there is traffic: `mlops-assets simulate --months 2` replays later months through a
    real `bentoml serve` (or send requests to one) and the monitoring runs on them."""
    window = _window(context, project)
    rows = live.window_rows(prediction_log, window)
    first, last = live.window_days(window)
    agreement = live.shadow_agreement(rows)
    return dg.Output(rows, metadata={
        "shadow_agreement": markdown_table(agreement.round(4)) if len(agreement)
        else "no shadow scores in this window",
        **frame_metadata(rows),
        "start": datetime.fromtimestamp(window.start, UTC).isoformat(timespec="seconds"),
        "end": datetime.fromtimestamp(window.end, UTC).isoformat(timespec="seconds"),
        "log_days": ", ".join(d for d in sorted(prediction_log) if first <= d <= last)
        or "none"})


@dg.asset(partitions_def=windows, group_name="monitoring", kinds={"evidently", "html"})
def drift_report(
    context: dg.AssetExecutionContext, window_traffic: pd.DataFrame, project: ProjectResource,
) -> dg.Output[dict]:
    """Drift of the window's inputs and predictions against the champion's training
    reference: per-feature scores (vectorized, Evidently's tests) and Evidently's HTML report
    on a deterministic sample.

    Empty until there is traffic: `mlops-assets simulate --months 2` replays later months through a
    real `bentoml serve` (or send requests to one) and the monitoring runs on them.
    """
    registry = project.registry()
    champion = registry.champion()
    if champion is None:
        raise ValueError("no champion: nothing to compare the traffic with")
    contract = project.contract()
    reference = registry.reference(champion)
    current = live.current_features(window_traffic, contract)
    result = drift.compute_drift(reference, current, contract)
    meta = {}
    if len(current):
        window = _window(context, project)
        snapshot = drift.drift_snapshot(
            reference, current, contract, name=f"window {context.partition_key}",
            tags=["drift", f"window:{context.partition_key}", f"model:{champion}"],
            timestamp=datetime.fromtimestamp(window.end, UTC))
        path = project.paths.reports / "drift" / f"{context.partition_key}.html"
        meta = report_link(project.report_store().publish(snapshot, contract.name, path))
    table = result.table().round(4)
    return dg.Output(result.as_dict() | {"champion": champion}, metadata={
        **meta,
        "champion": champion,
        "rows": len(current),
        "drifted_share": round(result.drifted_share, 4),
        "prediction_drift": round(result.prediction.score, 4) if result.prediction else 0.0,
        "verdict": result.verdict,
        "features": markdown_table(table) if len(table) else "no rows",
        "method": "per-feature scores: vectorized numpy/scipy versions of Evidently's default "
                  "tests on all rows; HTML: Evidently DataDriftPreset on a deterministic sample "
                  "of at most 5,000 rows per side",
    })


@dg.asset_check(asset=drift_report, partitions_def=windows, blocking=False)
def drift_within_limit(drift_report: dict, monitor: MonitoringResource) -> dg.AssetCheckResult:
    """The share of drifted features stays at or below the configured maximum."""
    share = drift_report["drifted_share"]
    ok = share <= monitor.max_drift_share
    return dg.AssetCheckResult(passed=ok, description=(
        f"{drift_report['verdict']}; limit {monitor.max_drift_share:.0%}"),
        metadata={"drifted_share": share, "limit": monitor.max_drift_share})


@dg.asset(partitions_def=windows, group_name="monitoring", kinds={"pandas"},
          ins={"feedback_labels": dg.AssetIn(metadata={"optional": True})})
def live_performance(context: dg.AssetExecutionContext, window_traffic: pd.DataFrame,
                     feedback_labels: pd.DataFrame | None,
                     project: ProjectResource) -> dg.Output[dict]:
    """Live metrics of the window's predictions that have a delayed label, and Evidently's
    classification report on them (the dashboard's live ROC AUC and log loss).

    Empty until there is traffic: `mlops-assets simulate --months 2` replays later months through a
    real `bentoml serve` (or send requests to one) and the monitoring runs on them.
    """
    contract = project.contract()
    labels = feedback_labels if feedback_labels is not None else live.no_feedback()
    m = live.live_metrics(window_traffic, labels)
    meta = {}
    joined = live.labelled(window_traffic, labels)
    # What the labels say about the model that answered (the champion variant's most used
    # version): the retraining sensor turns it into hold / recalibrate / retrain.
    answered = joined[joined["variant"] == "champion"]
    if len(answered):
        version = answered["model_version"].mode().iloc[0]
        answered = answered[answered["model_version"] == version]
        evidence = Evidence.from_labels(context.partition_key, answered[TARGET].to_numpy(int),
                                        answered["probability"].to_numpy(float))
        m |= {"judged_version": version, "evidence": evidence.as_dict()}
        meta["evidence"] = dg.MetadataValue.json(evidence.as_dict())
    if joined[TARGET].nunique() == 2:
        window = _window(context, project)
        versions = sorted(joined["model_version"].unique())
        threshold = project.registry().load(versions[-1]).threshold  # as it was served
        snapshot = evaluation.classification_snapshot(
            joined, joined[TARGET].to_numpy(int), joined["probability"].to_numpy(float),
            contract, threshold, name=f"live, window {context.partition_key}",
            tags=["live", f"window:{context.partition_key}", *(f"model:{v}" for v in versions)],
            timestamp=datetime.fromtimestamp(window.end, UTC), calibration=True)
        path = project.paths.reports / "live" / f"{context.partition_key}.html"
        meta |= report_link(project.report_store().publish(snapshot, contract.name, path))
    return dg.Output(m, metadata={**meta, **{
        k: (round(float(v), 4) if isinstance(v, int | float) else str(v))
        for k, v in m.items() if k != "evidence"}})


@dg.asset_check(asset=live_performance, partitions_def=windows, blocking=False)
def live_performance_above_floors(
    live_performance: dict, monitor: MonitoringResource
) -> dg.AssetCheckResult:
    """Live AUC and F1 above their floors and the calibration gap below its ceiling, once
    enough labels have arrived."""
    m = live_performance
    if m["labelled"] < monitor.min_labelled_rows:
        return dg.AssetCheckResult(passed=True, description=(
            f"{m['labelled']} labelled rows (< {monitor.min_labelled_rows}): not judged yet"),
            metadata={"labelled": m["labelled"]})
    problems = []
    auc = m.get("roc_auc", float("nan"))
    if auc == auc and auc < monitor.min_auc:
        problems.append(f"AUC {auc:.3f} < {monitor.min_auc}")
    if m["f1"] < monitor.min_f1:
        problems.append(f"F1 {m['f1']:.3f} < {monitor.min_f1}")
    if abs(m["calibration_gap"]) > monitor.max_calibration_gap:
        problems.append(f"calibration gap {m['calibration_gap']:+.3f} (observed "
                        f"{m['positive_rate']:.3f} vs predicted {m['mean_prediction']:.3f}) "
                        f"beyond {monitor.max_calibration_gap}")
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or f"ok on {m['labelled']} labelled rows ({m['verdict']})",
        metadata={"labelled": m["labelled"], "f1": m["f1"],
                  "calibration_gap": m["calibration_gap"]},
    )


@dg.asset(partitions_def=windows, group_name="monitoring", kinds={"pandas"})
def serving_health(window_traffic: pd.DataFrame, project: ProjectResource) -> dg.Output[dict]:
    """Missing inputs, outputs, values outside the training range, latency percentiles.

    Empty until there is traffic: `mlops-assets simulate --months 2` replays later months through a
    real `bentoml serve` (or send requests to one) and the monitoring runs on them."""
    registry = project.registry()
    champion = registry.champion()
    reference = registry.reference(champion) if champion else pd.DataFrame()
    summary, table = live.serving_health(window_traffic, reference, project.contract())
    return dg.Output(summary | {"features": table.to_dict("records")}, metadata={
        **summary,
        "features": markdown_table(table.round(4)),
    })


@dg.asset_check(asset=serving_health, partitions_def=windows, blocking=False)
def serving_health_ok(serving_health: dict, monitor: MonitoringResource) -> dg.AssetCheckResult:
    """Every prediction has an output and p99 latency is under the limit."""
    if serving_health["volume"] == 0:
        return dg.AssetCheckResult(passed=True, description="empty window: nothing served")
    problems = []
    if serving_health["non_null_output_fraction"] < 1.0:
        problems.append(f"{1 - serving_health['non_null_output_fraction']:.2%} null outputs")
    if serving_health["latency_p99_ms"] > monitor.max_latency_p99_ms:
        problems.append(f"p99 latency {serving_health['latency_p99_ms']:.1f} ms > "
                        f"{monitor.max_latency_p99_ms} ms")
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or "ok",
                               metadata={"latency_p99_ms": serving_health["latency_p99_ms"]})


monitoring_checks = [drift_within_limit, live_performance_above_floors, serving_health_ok]
