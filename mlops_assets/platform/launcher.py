"""The run launcher named in ``dagster.yaml``: Dagster's default launcher, plus the worker
health check that Dagster's run monitoring needs to see that a run's process died.

The default launcher cannot tell (``supports_check_run_worker_health`` is False), so a run
whose process was killed (``kill -9``, OOM, a closed laptop) stays STARTED for ever and holds
one of the queue's slots. Every run of this project executes its steps in one process and
Dagster records that process's pid in the run's engine events ("Executing steps in process
(pid: N)"), whether the daemon launched it or a CLI ran it in process. The monitoring daemon
asks this launcher about every STARTED run; a run whose process is gone (or is a zombie, or
whose pid now belongs to a process started after the run) is reported FAILED, and Dagster
marks the run failed and frees its slot.

Limit: the pid is checked on the machine the daemon runs on, so run workers must run on the
same host as the daemon (true for the embedded profile; a deployment with remote workers uses
its platform's launcher instead).
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterInstance, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus  # no public export
from dagster._core.storage.dagster_run import DagsterRun


def run_worker_pid(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process executing ``run_id``'s steps and when it said so (the latest
    engine event that names a pid), or None if it has not started executing yet."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=50
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "pid" in metadata:
            return int(metadata["pid"].value), record.event_log_entry.timestamp
    return None


def worker_status(pid: int, reported_at: float) -> tuple[WorkerStatus, str]:
    """Is process ``pid``, which reported itself at ``reported_at``, still running?"""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return WorkerStatus.FAILED, f"run worker process {pid} exited (zombie)"
        if process.create_time() > reported_at + 1.0:
            return WorkerStatus.FAILED, (
                f"run worker process {pid} is gone (the pid now belongs to a newer process)")
    except psutil.NoSuchProcess:
        return WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)"
    return WorkerStatus.RUNNING, f"run worker process {pid} is running"


def reap_dead_runs(instance: DagsterInstance) -> list[str]:
    """What run monitoring does, done now by whoever is about to start a run: a STARTED run
    whose worker process is gone is marked failed, and every finished run still holding a
    concurrency slot (a run killed inside the promotion pool) gives it back. Without this, a
    run killed while no daemon runs (the CLI, the demo) would hold its slot until one does.
    Returns the runs marked failed."""
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        run = record.dagster_run
        found = run_worker_pid(instance, run.run_id)
        if found is None:
            continue
        status, message = worker_status(*found)
        if status == WorkerStatus.FAILED:
            instance.report_run_failed(run, message)
            failed.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = list(storage.get_concurrency_run_ids())
        if holders:
            ended = instance.get_run_records(RunsFilter(run_ids=holders,
                                                        statuses=list(FINISHED_STATUSES)))
            for record in ended:
                storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
    return failed


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose runs Dagster's run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        found = run_worker_pid(self._instance, run.run_id)
        if found is None:  # not executing yet: the start timeout covers a launch that hangs
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not started yet")
        status, message = worker_status(*found)
        return CheckRunHealthResult(status, message)
