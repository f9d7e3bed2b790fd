"""Sensors that register new log days and monitoring windows, and close the loop by
launching retraining."""

import json
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from mlops_assets.defs.metadata import latest_metadata
from mlops_assets.defs.monitoring.assets import (
    prediction_days,
    windows,
)
from mlops_assets.defs.resources import (
    DAILY_WINDOWS,
    SENSOR_INTERVAL,
    ParquetIOManager,
    ProjectResource,
    RetrainPolicyResource,
    latest_run,
)
from mlops_assets.lib.dataset import split
from mlops_assets.lib.governance.registry import Registry, RegistryError
from mlops_assets.lib.monitoring import live
from mlops_assets.lib.monitoring.retraining import (
    Evidence,
    Judged,
    LossPolicy,
    Reference,
    RetrainState,
    choose_action,
    decide,
)

log_job = dg.define_asset_job(
    "ingest_prediction_log", selection=["prediction_log"],
    description="Read one day of the service's prediction log (started by "
                "prediction_log_sensor when the day's files grow).")
feedback_job = dg.define_asset_job(
    "ingest_feedback", selection=["feedback_labels"],
    description="Read every delayed-label file (started by feedback_sensor).")
window_job = dg.define_asset_job(
    "monitor_window",
    selection=dg.AssetSelection.assets("window_traffic", "drift_report", "live_performance",
                                       "serving_health"),
    description="Drift, live performance and serving health of one monitoring window.",
)
_MODEL_GROUPS = dg.AssetSelection.groups("dataset", "features", "training", "evaluation",
                                         "governance", "deployment")
retrain_job = dg.define_asset_job(
    "retrain", selection=_MODEL_GROUPS,
    description="Rebuild the dataset from every batch so far, train a challenger, gate it, "
                "and package the champion.",
)
recalibrate_job = dg.define_asset_job(
    "recalibrate", selection=_MODEL_GROUPS,
    config={"ops": {"candidate_model": {"config": {"recalibrate": True}}}},
    description="Rebuild the dataset from every batch so far, refit the champion's calibrator "
                "on the latest labelled rows as a new version (no training), gate it against "
                "the champion, and package the champion.",
)


@dg.sensor(job=log_job, minimum_interval_seconds=SENSOR_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers each day of the prediction log as a partition and "
                       "refreshes a day when its files grew.")
def prediction_log_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    """Registers each day of the prediction log as a partition and refreshes a day when it
    grew."""
    seen = json.loads(context.cursor) if context.cursor else {}
    sizes = live.log_day_sizes(project.paths.home / "predictions")
    changed = {d: s for d, s in sizes.items() if seen.get(d) != s}
    if not changed:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"prediction log unchanged ({len(sizes)} days)"), cursor=json.dumps(sizes))
    new_days = sorted(set(changed) - set(context.instance.get_dynamic_partitions(
        prediction_days.name)))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=d, run_key=f"{d}:{s}")
                      for d, s in sorted(changed.items())],
        dynamic_partitions_requests=[prediction_days.build_add_request(new_days)]
        if new_days else [],
        cursor=json.dumps(sizes),
    )


@dg.sensor(job=feedback_job, minimum_interval_seconds=SENSOR_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Re-reads the delayed labels when a label file arrives or changes.")
def feedback_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    """Re-reads the delayed labels when a label file arrives or changes."""
    folder = project.paths.home / "feedback"
    if not any(folder.glob("*.csv")):
        return dg.SkipReason(f"no label files in {folder} yet (columns: request_id and the "
                             "target; `mlops-assets simulate` writes them)")
    fp = live.fingerprint(folder, "*.csv")
    if fp == context.cursor:
        return dg.SkipReason("no new or changed label files")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"feedback:{fp}")], cursor=fp)


@dg.sensor(job=window_job, minimum_interval_seconds=SENSOR_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Monitors each closed window once its prediction-log days are read, "
                       "and again when newly read labels may change its live metrics.")
def window_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    """Monitors each closed window once the prediction_log partitions of its days cover every
    byte logged, and again when feedback_labels was re-read (until every prediction has its
    label)."""
    done = json.loads(context.cursor) if context.cursor else {}
    found = live.read_windows(project.paths.home / "monitoring" / "windows")
    labels_event, _ = latest_metadata(context.instance, "feedback_labels")
    labels = str(labels_event or "none")
    sizes = live.log_day_sizes(project.paths.home / "predictions")
    now = time.time()
    read: dict[str, int | None] = {}  # a day's bytes read by prediction_log, asked once a tick

    def read_bytes(day: str) -> int | None:
        if day not in read:
            read[day] = latest_metadata(context.instance, "prediction_log", day)[1].get(
                "log_bytes")
        return read[day]

    due, waiting = [], []
    for name, w in sorted(found.items()):
        if not w.closed(now) or done.get(name) == labels or (
                name in done and _fully_labelled(context.instance, name)):
            continue
        first, last = live.window_days(w)
        unread = [d for d, size in sizes.items()
                  if first <= d <= last and read_bytes(d) != size]
        if unread:
            waiting.append(f"{name}: waiting for prediction_log {unread} to be read "
                           "(ingest_prediction_log runs)")
        else:
            due.append(name)
    if not due:
        open_ = [n for n, w in found.items() if not w.closed(now)]
        return dg.SkipReason("\n".join(
            [f"{len(found)} windows; none due with the labels read so far"]
            + waiting + ([f"still open: {', '.join(open_)}"] if open_ else [])))
    existing = set(context.instance.get_dynamic_partitions(windows.name))
    new = sorted(set(due) - existing)
    done.update({name: labels for name in due})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=n, run_key=f"{n}:{labels}") for n in due],
        dynamic_partitions_requests=[windows.build_add_request(new)] if new else [],
        cursor=json.dumps(done),
    )


def _fully_labelled(instance: dg.DagsterInstance, window: str) -> bool:
    """The window's last live metrics already had a label for every prediction."""
    _, last = latest_metadata(instance, "live_performance", window)
    return bool(last) and last.get("labelled", 0) >= last.get("volume", 1)


def _reference(registry: Registry, version: str) -> Reference | None:
    """A version's own validation figures (a recalibrated version carries its base's)."""
    try:
        meta = registry.get(version).info.metadata
    except RegistryError:
        return None
    valid = meta.get("validation_metrics") or {}
    if "auc" not in valid or "log_loss" not in valid:
        return None
    # Versions from before validation_positive_rate was recorded: no label-shift correction.
    rate = meta.get("validation_positive_rate")
    return Reference(valid["auc"], valid["log_loss"], rate if rate is not None else float("nan"))


def judged_windows(instance: dg.DagsterInstance, registry: Registry, rule: LossPolicy,
                   after: int = 0, limit: int = 50) -> list[Judged]:
    """What the newest live-metrics records after event ``after`` call for: each window's
    evidence against its answering version's validation figures, its drift share as a
    warning."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("live_performance"), after_storage_id=after),
        limit=limit).records
    references: dict[str, Reference | None] = {}
    out = []
    for r in records:
        meta = {k: v.value for k, v in r.asset_materialization.metadata.items()}
        raw, version = meta.get("evidence"), meta.get("judged_version")
        window = r.asset_materialization.partition
        if not raw or not version or not window:
            continue
        if version not in references:
            references[version] = _reference(registry, version)
        reference = references[version]
        if reference is None:
            continue
        if reference.positive_rate != reference.positive_rate:  # not recorded: the window's
            reference = Reference(reference.auc, reference.log_loss, raw["positive_rate"])
        drifted = latest_metadata(instance, "drift_report", window)[1].get("drifted_share")
        out.append(Judged(r.storage_id, window, choose_action(
            Evidence.from_dict(raw, drifted), reference, rule)))
    return out


def new_labelled_rows(instance: dg.DagsterInstance, after: int, io_manager: ParquetIOManager,
                      contract) -> tuple[int, int]:
    """Labelled rows stored after event ``after`` that can reach training: (count, newest
    event id). A batch counts only at the version that passed its checks (not a blocked
    landing), and a row only if its content is new: not in the last built dataset, and not
    counted already (a copy of a batch under another name adds nothing)."""
    from mlops_assets.defs.dataset.assets import batch_eligibility

    validated = dg.AssetKey("validated_batch")
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=validated, after_storage_id=after), limit=1000).records
    marker = max([after, *(r.storage_id for r in records)])
    status = batch_eligibility(instance) if records else None
    passed = {} if status is None else dict(zip(
        status.loc[status["included"], "batch"], status.loc[status["included"], "version"],
        strict=True))
    files = [io_manager.stored_path(validated, r.run_id, r.partition_key)
             for r in records if passed.get(r.partition_key) == r.run_id]
    if not files:
        return 0, marker
    built = [io_manager.stored_path(dg.AssetKey(f"{s}_set"), run_id)
             for s in ("train", "validation", "test")
             if (run_id := latest_run(instance, dg.AssetKey(f"{s}_set")))]
    return split.new_contents(files, [p for p in built if p.is_file()], contract), marker


def last_training_event(instance: dg.DagsterInstance) -> int:
    record = instance.fetch_materializations(dg.AssetKey("candidate_model"), limit=1).records
    return record[0].storage_id if record else 0


@dg.sensor(jobs=[retrain_job, recalibrate_job], minimum_interval_seconds=SENSOR_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Recalibrates or retrains when a labelled window's live loss, "
                       "calibration or ranking calls for it (drift is a warning, not a "
                       "trigger), or retrains when enough new labelled rows arrived; a "
                       "cooldown spaces retrainings.")
def retrain_sensor(context: dg.SensorEvaluationContext, retrain_policy: RetrainPolicyResource,
                   project: ProjectResource, io_manager: dg.ResourceParam[ParquetIOManager]):
    """Turns each newly judged monitoring window into hold, recalibrate or retrain
    (``lib/monitoring/retraining.py``: live metrics against the answering version's validation
    figures, with sampling error), and enough new labelled rows into retrain; run keys make one
    cause one run, and every run says which evidence fired it."""
    registry = project.registry()
    if registry.champion() is None:
        return dg.SkipReason("no champion yet: the first model comes from train_and_promote "
                             "(make demo, or the job in the UI); retraining follows it")
    if context.cursor:
        state = RetrainState.from_dict(json.loads(context.cursor))
    else:  # first tick: rows before the current model and older judgements are not new
        latest = context.instance.fetch_materializations(dg.AssetKey("live_performance"),
                                                         limit=1).records
        state = RetrainState(handled_event_id=latest[0].storage_id if latest else 0,
                             rows_after=last_training_event(context.instance))
    # Only windows judged since the cursor: each tick reads no old record twice.
    judged = judged_windows(context.instance, registry, retrain_policy.rule(),
                            after=state.handled_event_id)
    new_rows, marker = new_labelled_rows(context.instance, state.rows_after, io_manager,
                                         project.contract())
    decision = decide(time.time(), state, judged, new_rows, marker, retrain_policy.policy())
    cursor = json.dumps(decision.state.as_dict())
    if decision.run_key is None:
        return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason), cursor=cursor)
    context.log.info(f"{decision.job}: {decision.reason}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=decision.run_key, job_name=decision.job,
                                    run_config=retrain_policy.run_config(decision.job),
                                    tags={"retrain/action": decision.job,
                                          "retrain/cause": decision.reason[:1000]})],
        cursor=cursor,
    )


class WindowConfig(dg.Config):
    day: str | None = None  # YYYY-MM-DD; default: yesterday (UTC)


@dg.op
def define_day_window(config: WindowConfig, project: ProjectResource) -> None:
    """Write the window file for one UTC day; the window sensor then monitors it."""
    day = config.day or (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    w = live.day_window(day)
    live.write_window(project.paths.home / "monitoring" / "windows", w.name, w.start,
                            w.end)


@dg.job(description="Define yesterday's monitoring window (run daily by the schedule).")
def define_daily_window():
    define_day_window()


daily_monitoring = dg.ScheduleDefinition(
    name="daily_monitoring",
    job=define_daily_window, cron_schedule="10 0 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING if DAILY_WINDOWS
    else dg.DefaultScheduleStatus.STOPPED,
    description="Each day, monitor the previous day's traffic.",
)
