"""The production profile on real servers: PostgreSQL (instance storage), a Dask scheduler
and workers (the steps' executor), a gRPC code server, dagster-webserver and dagster-daemon
as separate processes (`mlops-assets production`). The demo's loop runs through it (land ->
landing sensor on the profile's daemon -> ingest -> build -> train -> gate -> champion) and
PostgreSQL holds the runs, materializations and check results. Then a Dask worker is killed
in the middle of a training step: the run fails, and its re-execution from failure (the UI's
button, through the webserver's GraphQL) succeeds. That the executor does not change results
(the same demo embedded gives the same sealed-test AUC) is checked by `make bench`
(`benchmarks.run --only profiles` fails otherwise): two full demos do not fit the test
budget. The demo is the bring-your-own-data one of the integer-coded dataset (tests/byod),
whose Bento then answers: one demo run for all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from mlops_assets.config import PROJECT_ROOT
from mlops_assets.defs.ingestion import sensors as ingestion_sensors
from mlops_assets.platform import postgres
from mlops_assets.platform.procs import free_port, server
from tests.byod import datasets
from tests.byod.test_bring_your_own_data import serve_bento
from tests.integration.test_webserver import graphql

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = str(Path(sys.executable).parent / "mlops-assets")
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
REEXECUTE = """mutation($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def query(url: str, sql: str, *args) -> list[tuple]:
    with psycopg2.connect(url.replace("+psycopg2", "")) as db, db.cursor() as cur:
        cur.execute(sql, args or None)
        return cur.fetchall()


def wait_for(what, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.5)
    return value


def run_status(url: str, run_id: str) -> str | None:
    (status,), = query(url, "SELECT status FROM runs WHERE run_id = %s", run_id)
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


def step_events(url: str, run_id: str, kind: str) -> list[dict]:
    return [json.loads(event)["dagster_event"] for event, in query(
        url, "SELECT event FROM event_logs WHERE run_id = %s AND dagster_event_type = %s "
        "ORDER BY id", run_id, kind)]


def kill_a_worker_mid_step(url: str, ui_port: int) -> None:
    """Train again (a 20 s search, a lenient gate: this is about the executor, not the
    gate), SIGKILL the Dask worker running the search, then re-execute from failure."""
    config = {"ops": {"candidate_model": {"config": {"n_trials": 1000, "timeout_s": 20}}},
              "resources": {"gate_policy": {"config": {
                  "auc_margin": 1.0, "log_loss_margin": 10.0, "max_slice_drop": 1.0}}}}
    launched = graphql(ui_port, LAUNCH, {"p": {
        "selector": {"repositoryLocationName": "mlops_assets",
                     "repositoryName": "__repository__", "jobName": "train_and_promote"},
        "runConfigData": config}})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    start = wait_for("the search starts", lambda: next(
        (e for e in step_events(url, run_id, "STEP_START")
         if e["step_key"] == "candidate_model"), None), 240)
    time.sleep(3)
    os.kill(start["pid"], signal.SIGKILL)  # the Dask worker's process, not the run's
    assert wait_for("the run ends", lambda: run_status(url, run_id), 120) == "FAILURE"
    failure, = step_events(url, run_id, "STEP_FAILURE")
    assert failure["step_key"] == "candidate_model"
    assert "KilledWorker" in failure["event_specific_data"]["error"]["message"]
    assert not [e for e in step_events(url, run_id, "ASSET_MATERIALIZATION")]
    rerun = graphql(ui_port, REEXECUTE, {"p": {"parentRunId": run_id,
                                               "strategy": "FROM_FAILURE"}})
    rerun = rerun["launchRunReexecution"]
    assert rerun["__typename"] == "LaunchRunSuccess", rerun
    rerun_id = rerun["run"]["runId"]
    assert wait_for("the re-execution ends", lambda: run_status(url, rerun_id), 600) \
        == "SUCCESS", step_events(url, rerun_id, "STEP_FAILURE")
    done = {e["step_key"] for e in step_events(url, rerun_id, "STEP_SUCCESS")}
    assert {"candidate_model", "gate_report", "champion", "bento"} <= done
    # The restarted worker ran steps again; each step on a worker, not in the run's process.
    run_pid = step_events(url, rerun_id, "PIPELINE_START")[0]["pid"]
    assert run_pid not in {e["pid"] for e in step_events(url, rerun_id, "STEP_START")}


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
                tmp_path / "production.log",
                # A shell whose PATH lacks /usr/sbin (runuser's folder) starts it too.
                {"MLOPS_SENSOR_INTERVAL": "3", "PATH": "/usr/bin:/bin"}, PROJECT_ROOT,
                timeout=240):
        # The profile keeps PostgreSQL's durability (fsync on).
        assert query(url, "SHOW fsync") == [("on",)]
        # The URL as people write it: the CLI picks the driver the project ships.
        demo = subprocess.run(
            [CLI, "--home", str(home), "--contract", str(contract), "demo", "--trials", "2"],
            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900,
            env={**os.environ, postgres.URL_ENV: url.replace("postgresql+psycopg2://",
                                                             "postgres://")})
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "landed 6 of 6 batches" in demo.stdout  # 2021-01 .. 2021-06 by signup_date
        # Every step went to the Dask cluster (STEP_WORKER_STARTING: submitted to it); the
        # batches' own runs ran inside the ingest_landed step a worker was running.
        children = ("SELECT run_id FROM run_tags WHERE key = "
                    f"'{ingestion_sensors.PARENT_TAG}'")
        submitted = query(url, "SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                          "'STEP_WORKER_STARTING' AND event LIKE '%Dask scheduler%'")[0][0]
        steps = query(url, "SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                      f"'STEP_START' AND run_id NOT IN ({children})")[0][0]
        assert submitted == steps > 20
        parents = query(url, "SELECT DISTINCT t.value, r.pipeline_name FROM run_tags t JOIN "
                        "runs r ON r.run_id = t.value WHERE t.key = "
                        f"'{ingestion_sensors.PARENT_TAG}'")
        assert parents and {job for _, job in parents} == {"ingest_landed"}
        for parent, _ in parents:
            assert query(url, "SELECT count(*) FROM event_logs WHERE run_id = %s AND "
                         "dagster_event_type = 'STEP_WORKER_STARTING'", parent)[0][0] == 1
        # Both workers ran steps of the training run: outputs written by one were read by
        # the other through the IO manager's shared folder.
        (train_id,), = query(url, "SELECT run_id FROM runs WHERE pipeline_name = "
                             "'train_and_promote'")
        assert len({e["pid"] for e in step_events(url, train_id, "STEP_START")}) == 2
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
                        "WHERE t.key = 'dagster/sensor_name' AND t.value = 'landing_sensor' "
                        "AND r.pipeline_name = 'ingest_batch'")
            by_sensor = cur.fetchone()[0]
        kill_a_worker_mid_step(url, ui_port)
    assert runs[("ingest_batch", "SUCCESS")] == 6 and by_sensor == 6  # the profile's daemon
    assert runs[("build_dataset", "SUCCESS")] == 1
    assert runs[("train_and_promote", "SUCCESS")] == 1  # before the worker was killed
    assert champion_events == 1 and check_events >= 6 * 2 + 4  # batches' and the gate's
    # The demo used the profile's daemon, not one of its own, and nothing went to SQLite.
    assert not (home / "dagster" / "cli-daemon.log").exists()
    assert not (home / "dagster" / "history" / "runs.db").exists()
    assert "postgres" in (home / "dagster" / "dagster.yaml").read_text()



def test_postgres_starts_under_a_home_deeper_than_a_unix_socket_path_allows(tmp_path):
    """A socket file under a deep home passes the kernel's 107-byte limit; the server listens
    on TCP only, so the profile starts wherever the home is (it failed to start under the
    deeper temp folders of a parallel test run)."""
    data_dir = tmp_path / ("deep-" * 20) / "postgres"
    assert len(str(data_dir / ".s.PGSQL.65535")) > 107
    with postgres.server(data_dir, tmp_path / "pg.log", durable=False) as url:
        assert query(url, "SELECT 1") == [(1,)]
    assert not list(data_dir.glob("**/.s.PGSQL.*"))
