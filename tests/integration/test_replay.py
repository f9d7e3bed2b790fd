"""A short replay with a real `dagster-daemon` and a real `bentoml serve`: two months of
traffic, labels and batches; the sensors close the loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_month_replay_retrains_through_the_sensor(tmp_path):
    home = tmp_path / "home"
    exe = Path(sys.executable).parent / "mlops-assets"
    done = subprocess.run(
        [str(exe), "--home", str(home), "simulate", "--months", "2", "--trials", "3",
         "--demo-trials", "3", "--sensor-interval", "2"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=1500,
        env={**os.environ, "DAGSTER_HOME": str(home / "dagster")},
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    timeline = json.loads((home / "reports" / "replay" / "timeline.json").read_text())
    assert [row["month"] for row in timeline] == ["2009-08", "2009-09"]
    assert all(row["requests"] > 0 and row["drift_share"] is not None for row in timeline)
    # Every month says whether the loop recalibrated, retrained or held, and why.
    assert all(row["action"] in ("hold", "recalibrate", "retrain", "recalibrate + retrain",
                                 "retrain + recalibrate") and row["why"] for row in timeline)
    assert any(row["action"] != "hold" for row in timeline), timeline
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        retrains = [r for job in ("retrain", "recalibrate") for r in instance.get_runs(
            dg.RunsFilter(job_name=job, tags={"dagster/sensor_name": "retrain_sensor"}))]
        monitored = instance.get_runs(dg.RunsFilter(job_name="monitor_window"))
        demo = instance.get_runs(dg.RunsFilter(job_name="train_and_promote"))
    assert retrains, "no retrain or recalibrate run was launched by retrain_sensor"
    assert all(r.tags["retrain/action"] == r.job_name and r.tags["retrain/cause"]
               for r in retrains)
    assert {r.tags["dagster/partition"] for r in monitored} == {"2009-08", "2009-09"}
    # The demo's own runs were launched through the instance: they carry their job's origin.
    assert demo and demo[-1].remote_job_origin is not None
    assert "| month" in (home / "reports" / "replay" / "timeline.md").read_text()
    # The daemon used the replay's one code server: a daemon given workspace.yaml starts its
    # own and replaces it every 60 s (the old one shuts down without heartbeats), and the
    # next run then waits for the new one to load the code.
    logs = home / "reports" / "replay"
    assert "grpc_server" in (logs / "cli-daemon-workspace.yaml").read_text()
    assert "No heartbeat received" not in (logs / "cli-daemon.log").read_text()
