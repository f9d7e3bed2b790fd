"""The production profile on real servers: PostgreSQL (instance storage), a gRPC code
server, dagster-webserver and dagster-daemon as separate processes (`mlops-assets
production`). The demo's loop runs through it (land -> landing sensor on the profile's daemon
-> ingest -> build -> train -> gate -> champion) and PostgreSQL holds the runs,
materializations and check results. The demo is the bring-your-own-data one of the
integer-coded dataset (tests/byod), whose Bento then answers: one demo run for both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from mlops_assets import postgres
from mlops_assets.config import PROJECT_ROOT
from mlops_assets.procs import free_port, server
from tests.byod import datasets
from tests.byod.test_bring_your_own_data import serve_bento

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = str(Path(sys.executable).parent / "mlops-assets")


def test_the_loop_runs_on_postgres_with_separate_services(tmp_path):
    # Six monthly batches with a real signal (the BYOD test's dataset): a model that passes
    # the gate in a minute.
    data_file = datasets.integer_coded(tmp_path / "data")
    assert subprocess.run([CLI, "contract", "init", str(data_file), "--target", "churned",
                           "--period", "signup_date"], capture_output=True).returncode == 0
    contract = tmp_path / "data" / "telco.yaml"
    home = tmp_path / "home"
    pg_port, ui_port = free_port(), free_port()
    url = postgres.url(pg_port)
    # The contract belongs to the code location: the profile's code server loads it.
    with server([CLI, "--home", str(home), "--contract", str(contract), "production",
                 "--port", str(ui_port),
                 "--pg-port", str(pg_port)], f"http://127.0.0.1:{ui_port}/server_info",
                tmp_path / "production.log", {"MLOPS_SENSOR_INTERVAL": "3"}, PROJECT_ROOT,
                timeout=240):
        demo = subprocess.run(
            [CLI, "--home", str(home), "--contract", str(contract), "demo", "--trials", "2"],
            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900,
            env={**os.environ, postgres.URL_ENV: url})
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "landed 6 of 6 batches" in demo.stdout  # 2021-01 .. 2021-06 by signup_date
        # Bring your own data: the Bento of a contract given by path answers integer-coded
        # categories sent as JSON numbers (tests/byod).
        serve_bento(demo.stdout, home, tmp_path,
                    {"plan": 3, "region": 30, "usage": 61.5, "tenure": 12})
        with psycopg2.connect(url.replace("+psycopg2", "")) as db, db.cursor() as cur:
            cur.execute("SELECT pipeline_name, status, count(*) FROM runs "
                        "GROUP BY pipeline_name, status")
            runs = {(job, status): n for job, status, n in cur.fetchall()}
            cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                        "'ASSET_MATERIALIZATION' AND asset_key LIKE '%champion%'")
            champion_events = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                        "'ASSET_CHECK_EVALUATION'")
            check_events = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                        "WHERE t.key = 'dagster/sensor_name' AND t.value = 'landing_sensor'")
            by_sensor = cur.fetchone()[0]
    assert runs[("ingest_batch", "SUCCESS")] == 6 and by_sensor == 6  # the profile's daemon
    assert runs[("build_dataset", "SUCCESS")] == 1
    assert runs[("train_and_promote", "SUCCESS")] == 1
    assert champion_events == 1 and check_events >= 6 * 2 + 4  # batches' and the gate's
    # The demo used the profile's daemon, not one of its own, and nothing went to SQLite.
    assert not (home / "dagster" / "cli-daemon.log").exists()
    assert not (home / "dagster" / "history" / "runs.db").exists()
    assert "postgres" in (home / "dagster" / "dagster.yaml").read_text()
