"""Faults of runs: two trainings at once on one home, and run processes killed with SIGKILL
while the daemon must keep the loop going. Real processes, a real instance, a real
`dagster-daemon`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from mlops_assets import orchestration
from mlops_assets.config import PROJECT_ROOT
from mlops_assets.defs import patches
from mlops_assets.lib import io
from mlops_assets.platform.launcher import run_worker_pid
from mlops_assets.platform.procs import server
from tests.conftest import make_project
from tests.helpers import contract_with_gate, wait_until

pytestmark = pytest.mark.integration
BATCHES = ("2008-11", "2009-04", "2009-05")
POOL_STEPS = {"gate_report", "candidate_bento", "champion", "bento"}


@pytest.fixture
def prepared(tmp_path, monkeypatch, bank_batches):
    """A home with three batches ingested and the dataset built, and no champion yet."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    project = make_project(tmp_path, min_auc=0.6)
    for key in BATCHES:
        project.land(key, bank_batches[key])
    project.ingest()
    assert project.build_dataset().success
    yield project
    project.instance.dispose()


def _train(project, seed: int, trials: int, log: Path) -> subprocess.Popen:
    script = Path(__file__).with_name("train_run.py")
    env = {**os.environ, "DAGSTER_HOME": str(project.home / "dagster"),
           "MLOPS_HOME": str(project.home), "PYTHONPATH": str(PROJECT_ROOT)}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(script), str(project.home), str(seed),
                                 str(trials)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=PROJECT_ROOT, start_new_session=True)


def _stored(project, asset: str, run_id: str) -> dict:
    return io.read_json(project.paths.storage / asset / f"{run_id}.json")


def _step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    spans: dict[str, list[float]] = {}
    for record in instance.get_records_for_run(run_id, limit=10_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or event.step_key not in POOL_STEPS:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            spans.setdefault(event.step_key, [entry.timestamp, entry.timestamp])[0] = \
                entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS,
                                  dg.DagsterEventType.STEP_FAILURE):
            spans.setdefault(event.step_key, [entry.timestamp, entry.timestamp])[1] = \
                entry.timestamp
    return {k: (v[0], v[1]) for k, v in spans.items()}


def test_two_trainings_at_once_never_mix_their_outputs(prepared, tmp_path):
    project = prepared
    procs = [_train(project, seed, 2, tmp_path / f"train{seed}.log") for seed in (1, 2)]
    for proc in procs:
        assert proc.wait(600) == 0, (tmp_path / "train1.log").read_text()[-3000:]
    outcomes = dict(
        line.split(" ", 1) for seed in (1, 2)
        for line in (tmp_path / f"train{seed}.log").read_text().splitlines()[-1:]
    )
    assert len(outcomes) == 2
    registry = project.registry()
    candidates = {}
    for run_id in outcomes:
        candidate = _stored(project, "candidate_model", run_id)
        candidates[run_id] = candidate["tag"]
        # Each run judged its own model with its own evidence.
        assert candidate["dagster_run_id"] == run_id
        assert _stored(project, "model_evaluation", run_id)["tag"] == candidate["tag"]
        assert _stored(project, "gate_report", run_id)["challenger"] == candidate["tag"]
    assert any(o == "ok" for o in outcomes.values())
    for run_id, outcome in outcomes.items():
        # A run fails only by the registry's compare-and-set, or by the gate: then it was
        # compared with the model the other run had just promoted, on the same test rows.
        other = next(candidates[r] for r in candidates if r != run_id)
        report = _stored(project, "gate_report", run_id)
        assert (outcome == "ok" or "moved from" in outcome
                or ("check not_worse_than_champion" in outcome
                    and report["champion"] == other)), (outcome, report.get("champion"))
    # Every promotion is recorded under the run whose model it promoted.
    for event in registry.history():
        run_id = event["reason"].rsplit(" ", 1)[-1]
        assert candidates[run_id] == event["tag"], event
    # The promotion path ran one step at a time across the two runs (the pool).
    spans = [s for run_id in outcomes for s in _step_spans(project.instance, run_id).values()]
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.01, spans
    bentos = [r.asset_materialization.metadata["model_tag"].value
              for r in project.instance.fetch_materializations(dg.AssetKey("bento"),
                                                               limit=10).records]
    assert bentos and set(bentos) <= set(candidates.values())
    assert bentos[0] == registry.champion()


def test_killed_runs_are_marked_failed_and_the_queue_moves_on(prepared, tmp_path, bank_batches):
    project = prepared
    instance = project.instance
    procs = [_train(project, seed, 2000, tmp_path / f"train{seed}.log") for seed in (1, 2)]

    def both_executing():
        runs = instance.get_run_records(dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED], job_name="train_and_promote"))
        pids = [run_worker_pid(instance, r.dagster_run.run_id) for r in runs]
        return [r.dagster_run.run_id for r in runs] if len(runs) == 2 and all(pids) else None

    killed = wait_until(both_executing, 120, what="two training runs executing")
    time.sleep(2)  # inside the hyperparameter search
    for proc in procs:
        os.kill(proc.pid, signal.SIGKILL)  # by PID
        proc.wait(10)
    assert all(instance.get_run_by_id(r).status == dg.DagsterRunStatus.STARTED for r in killed)
    # Both slots are held by dead runs. A new batch lands; the daemon must carry on.
    project.land("2009-06", bank_batches["2009-06"])
    env = {"DAGSTER_HOME": str(project.home / "dagster"), "MLOPS_HOME": str(project.home),
           "MLOPS_SENSOR_INTERVAL": "2"}
    cmd = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    with server(cmd, None, tmp_path / "daemon.log", env, PROJECT_ROOT) as daemon:

        def ingested():
            runs = instance.get_run_records(dg.RunsFilter(
                job_name="ingest_batch", tags={"batch": "2009-06"}))
            return runs and runs[0].dagster_run.status in (
                dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)

        wait_until(ingested, 180, every=1, what="the new batch ingested by the daemon")
        assert daemon.poll() is None
    for run_id in killed:
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE, run.status
        failure = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[-1]
        assert "is gone (killed or crashed)" in failure.event_log_entry.dagster_event.message
    ingest = instance.get_run_records(dg.RunsFilter(job_name="ingest_batch",
                                                    tags={"batch": "2009-06"}))[0]
    assert ingest.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    # Nothing of the killed runs reached the registry.
    assert project.registry().champion() is None


@pytest.mark.slow
def test_a_run_killed_inside_the_promotion_pool_does_not_hold_it(prepared, tmp_path):
    project = prepared
    instance = project.instance
    env = {**os.environ, "DAGSTER_HOME": str(project.home / "dagster"),
           "MLOPS_HOME": str(project.home), "PYTHONPATH": str(PROJECT_ROOT),
           "MLOPS_CONTRACT": str(contract_with_gate(tmp_path, min_auc=0.6)),
           "MLOPS_SENSOR_INTERVAL": "2", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "launch.log", "w")  # noqa: SIM115 (closed below)
    launcher = subprocess.Popen([sys.executable, str(Path(__file__).with_name("launch_run.py")),
                                 "2"], stdout=subprocess.PIPE, stderr=log, env=env,
                                cwd=PROJECT_ROOT, text=True, start_new_session=True)
    run_id = launcher.stdout.readline().strip()
    assert run_id, (tmp_path / "launch.log").read_text()[-3000:]

    def in_pool_step():
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_START).records
        steps = {r.event_log_entry.dagster_event.step_key for r in records}
        run = instance.get_run_by_id(run_id)
        assert run.status not in orchestration.TERMINAL, orchestration.run_failure(
            instance, run_id)
        return "candidate_bento" in steps  # the long step of the pool: build and serve

    wait_until(in_pool_step, 300, every=0.1, what="the run inside the candidate_bento step")
    assert instance.event_log_storage.get_concurrency_info("promotion").claimed_slots
    # Kill the run worker, the code server and the launcher outright.
    victims = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(True)]
    worker = run_worker_pid(instance, run_id)
    # The run worker was forked from the code server's forkserver, which preloaded the code
    # location and the heavy libraries (defs/patches.py), not spawned as a fresh interpreter.
    parent = psutil.Process(worker[0]).parent()
    assert "multiprocessing.forkserver" in " ".join(parent.cmdline()), parent.cmdline()
    assert all(m in " ".join(parent.cmdline()) for m in patches.PRELOADED), parent.cmdline()
    assert parent.parent().pid in {p.pid for p in victims}  # the launcher's code server's
    victims += [psutil.Process(worker[0])] if worker and psutil.pid_exists(worker[0]) else []
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    launcher.wait(10)
    log.close()
    # The daemon notices the dead run, and the next training passes through the pool.
    cmd = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    with server(cmd, None, tmp_path / "daemon.log", env, PROJECT_ROOT):
        wait_until(lambda: instance.get_run_by_id(run_id).status
                   == dg.DagsterRunStatus.FAILURE, 120, every=1,
                   what="the killed run marked failed")
        wait_until(lambda: not instance.event_log_storage.get_concurrency_info(
            "promotion").claimed_slots, 120, every=1, what="the promotion pool freed")
        second = _train(project, 3, 2, tmp_path / "second.log")
        assert second.wait(300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    outcome = (tmp_path / "second.log").read_text().splitlines()[-1]
    assert outcome.endswith(" ok"), outcome
