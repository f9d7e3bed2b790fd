"""Replay of real data against the running system, month by month.

For each period after the initial ones: the month's rows are sent as traffic to the running
``bentoml serve`` over HTTP, the month is closed as a monitoring window, its labels land as
feedback and its batch in the landing directory; then the Dagster daemon's sensors do the
rest (ingest, monitor, retrain, gate, package) while this waits for the runs to settle and
records what happened."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.config import PROJECT_ROOT, TARGET, DatasetContract, Paths
from mlops_assets.defs.metadata import latest_metadata
from mlops_assets.defs.monitoring.sensors import judged_windows
from mlops_assets.defs.resources import DAILY_WINDOWS_ENV
from mlops_assets.lib import io
from mlops_assets.lib.dataset import data
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.monitoring import live
from mlops_assets.lib.monitoring.retraining import LossPolicy
from mlops_assets.orchestration import Launcher
from mlops_assets.platform.procs import children_environment, free_port, server

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass(frozen=True)
class ReplaySettings:
    months: int
    initial_periods: int = 12
    sensor_interval_s: int = 5
    retrain_cooldown_s: float = 0.0
    retrain_trials: int = 5
    timeout_per_month_s: float = 900.0
    batch_size: int = 100


def records_of(rows: pd.DataFrame, contract: DatasetContract) -> tuple[list[dict], pd.Series]:
    """A batch's valid rows as JSON records a client would send, and their labels."""
    valid = data.validate_rows(data.parse_batch(rows, contract, "replay"), contract).valid
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
               for r in valid[contract.features].astype(object).to_dict("records")]
    return records, valid[TARGET]


def send(url: str, records: list[dict], batch_size: int) -> list[str]:
    ids = []
    for i in range(0, len(records), batch_size):
        body = json.dumps({"records": records[i:i + batch_size]}).encode()
        req = urllib.request.Request(f"{url}/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            ids.extend(a["request_id"] for a in json.loads(r.read()))
    return ids


def settle(instance: dg.DagsterInstance, window: str, quiet_s: float, timeout_s: float) -> None:
    """Wait for the window's monitoring run, then until no run is active for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        monitored = instance.get_runs(dg.RunsFilter(
            job_name="monitor_window", tags={"dagster/partition": window},
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]))
        active = instance.get_runs(dg.RunsFilter(statuses=ACTIVE))
        if monitored and not active:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        time.sleep(1.0)
    raise TimeoutError(f"window {window}: runs did not settle within {timeout_s:.0f} s")


def outcome(instance: dg.DagsterInstance, since: float) -> tuple[str, str, str]:
    """What the retraining sensor launched since ``since``: (action, why, result)."""
    runs = [r for job in ("retrain", "recalibrate")
            for r in instance.get_runs(dg.RunsFilter(job_name=job))
            if instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp() >= since]
    if not runs:
        return "hold", "", "-"
    actions, causes, results = [], [], []
    for run in sorted(runs, key=lambda r: instance.get_run_record_by_id(
            r.run_id).create_timestamp):
        actions.append(run.job_name)
        causes.append(run.tags.get("retrain/cause", ""))
        if run.status == dg.DagsterRunStatus.SUCCESS:
            results.append("promoted")
            continue
        failed_checks = _failed_checks(instance, run.run_id)
        results.append(f"blocked ({', '.join(failed_checks)})" if failed_checks
                       else f"run {run.status.value.lower()}")
    return " + ".join(actions), " | ".join(causes), "; ".join(results)


def _failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    names = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if not evaluation.passed:
            names.append(evaluation.check_name)
    return names


def environment(home: Path, contract: DatasetContract, settings: ReplaySettings
                ) -> dict[str, str]:
    """What the replay's `bentoml serve`, code server and daemon read from the environment."""
    return {"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
            "MLOPS_CONTRACT": contract.name, "MLOPS_RELOAD_SECONDS": "1",
            "MLOPS_CANARY_SHARE": "0", "MLOPS_SENSOR_INTERVAL": str(settings.sensor_interval_s),
            "MLOPS_RETRAIN_COOLDOWN_S": str(settings.retrain_cooldown_s),
            "MLOPS_RETRAIN_TRIALS": str(settings.retrain_trials),
            "BENTOML_HOME": str(Registry(home).bentoml_home),
            DAILY_WINDOWS_ENV: "0"}  # the replay closes a window per month itself


def run(home: Path, contract: DatasetContract, settings: ReplaySettings,
        log=print) -> pd.DataFrame:
    """Start `bentoml serve`, a code server and `dagster-daemon` (each stopped by its PID at
    the end), replay ``settings.months`` months, and return the timeline."""
    paths = Paths(home)
    registry = Registry(home)
    if registry.champion() is None:
        raise RuntimeError(f"no champion in {home}: run `mlops-assets demo` first")
    batches = list(data.source_batches(contract).items())
    months = batches[settings.initial_periods:settings.initial_periods + settings.months]
    bin_dir = Path(sys.executable).parent
    env = environment(home, contract, settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = paths.reports / "replay"
    timeline = []
    # The daemon and the code server its sensors and runs use are the Launcher's (as in the
    # demo): a daemon given workspace.yaml would start a code server of its own and replace
    # it every minute (Dagster reloads a daemon's workspace every 60 s), each new one
    # loading the code again and making the next run wait for it. They read the settings
    # from the environment they start in.
    with (
        children_environment(env),
        server([str(bin_dir / "bentoml"), "serve", "--port", str(port)], f"{url}/readyz",
               logs / "bentoml.log", {}, PROJECT_ROOT, timeout=180),
        dg.DagsterInstance.from_config(str(home / "dagster")) as instance,
        Launcher(instance, echo=log, daemon=True, log_dir=logs) as launcher,
    ):
        if launcher.uses_running_daemon:
            log("a dagster-daemon already serves this instance (`make ui`?): the replay uses "
                "it, with its own sensor interval and retraining settings, not these")
        for month, rows in months:
            started = time.time()
            before = registry.champion()
            records, labels = records_of(rows, contract)
            ids = send(url, records, settings.batch_size)
            live.write_window(paths.home / "monitoring" / "windows", month, started,
                                    time.time() + 0.001)
            feedback = pd.DataFrame({"request_id": ids, contract.target.column: labels.map(
                {1: contract.target.positive[0], 0: contract.target.negative[0]}).to_numpy()})
            io.write_with(paths.home / "feedback" / f"{month}.csv",
                          lambda tmp, f=feedback: f.to_csv(tmp, index=False))
            data.write_batch(rows, paths.landing, month, contract.source.separator)
            settle(instance, month, quiet_s=max(3 * settings.sensor_interval_s, 10),
                   timeout_s=settings.timeout_per_month_s)
            action, why, result = outcome(instance, started)
            if action == "hold":  # what the sensor read in the month's labels
                judged = [j for j in judged_windows(instance, registry, LossPolicy())
                          if j.window == month]
                why = judged[0].action.why if judged else "no labelled window judged"
            observed = latest_metadata(instance, "live_performance", month)[1]
            drifted = latest_metadata(instance, "drift_report", month)[1]
            row = {"month": month, "requests": len(ids), "champion": before,
                   "live_auc": observed.get("roc_auc"), "live_f1": observed.get("f1"),
                   "calibration_gap": observed.get("calibration_gap"),
                   "drift_share": drifted.get("drifted_share"),
                   "action": action, "why": why, "result": result,
                   "champion_after": registry.champion(),
                   "seconds": round(time.time() - started, 1)}
            timeline.append(row)
            log(f"{month}: {row}")
    return pd.DataFrame(timeline)
