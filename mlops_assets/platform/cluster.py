"""A Dask cluster on this machine for the production profile's step executor
(MLOPS_EXECUTOR=dask): a scheduler and worker processes, bound to 127.0.0.1, each in its own
session so the profile stops them by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mlops_assets.platform.procs import free_port, start

# A step whose worker dies fails its run: Dask would otherwise run the task again on another
# worker, a second start of a step Dagster has already logged as started. The run is then
# re-executed from failure, like any failed run, from the UI or the CLI.
SCHEDULER_CONFIG = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
# Worker processes that may start processes of their own: a training step that fits on a
# LocalCluster (lib/training/dask_training.py) starts its workers from the executor worker it
# runs on, and a daemonic process may have no children ("Nanny failed to start"). The workers still
# stop with the profile: they are in the session it stops by PID.
WORKER_CONFIG = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


def start_scheduler(log: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = start([str(Path(sys.executable).parent / "dask"), "scheduler", "--host", "127.0.0.1",
                  "--port", str(port), "--no-dashboard"], log, SCHEDULER_CONFIG, cwd)
    return proc, f"tcp://127.0.0.1:{port}"


def start_workers(address: str, n: int, log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    """``n`` single-threaded worker processes (Dagster steps are not thread-safe) under one
    nanny process, which starts a worker again when one dies (kill -9, out of memory)."""
    return start([str(Path(sys.executable).parent / "dask"), "worker", address,
                  "--nworkers", str(n), "--nthreads", "1", "--host", "127.0.0.1",
                  "--no-dashboard", "--name", "mlops"], log, {**WORKER_CONFIG, **env}, cwd)


def wait_for_workers(address: str, n: int, procs: list[subprocess.Popen], log: Path,
                     timeout: float = 120) -> dict[str, int]:
    """Until ``n`` workers have joined the scheduler; their addresses and PIDs."""
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(address, timeout=timeout) as client:
        while True:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            if len(workers) >= n:
                return client.run(os.getpid)
            dead = next((p for p in procs if p.poll() is not None), None)
            if dead is not None or time.monotonic() > deadline:
                why = f"exited with {dead.returncode}" if dead else f"not up after {timeout} s"
                raise RuntimeError(f"Dask workers {why}:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)


# --- the executor ---------------------------------------------------------------------------


def _execute_step(serialized_args: str) -> None:
    """On a Dask worker: what `dagster api execute_step` does, in the worker's process (its
    imports are warm; a subprocess per step would pay ~6 s of imports). The step writes its
    events to the instance, where the run's executor reads them."""
    import dagster as dg
    from dagster._cli.api import _execute_step_command_body
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes.config_class import ConfigurableClassData
    from dagster_shared.serdes import deserialize_value

    args = deserialize_value(serialized_args, ExecuteStepArgs)
    # No stdout/stderr capture here: Dagster mirrors a step's streams through `tail -F`
    # processes it stops with SIGTERM, which a Dask worker's children ignore (they inherit
    # its ignored signals); each step waited for them and left two behind for good. The
    # step's own events (context.log, materializations, checks) reach the instance as ever.
    ref = args.instance_ref._replace(compute_logs_data=ConfigurableClassData(
        "dagster._core.storage.noop_compute_log_manager", "NoOpComputeLogManager", "{}\n"))
    with dg.DagsterInstance.from_ref(ref) as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None:
            raise RuntimeError(f"run {args.run_id} is not in the instance")
        for _ in _execute_step_command_body(args, instance, run):
            pass


def dask_executor(address: str):
    """An executor whose steps are tasks on the Dask cluster at ``address``.

    Built on dagster's StepDelegatingExecutor (the executor behind the Kubernetes and Docker
    ones) with a Dask step handler, so the run's own process orchestrates the steps exactly
    as the embedded executor does: a failed blocking check skips what depends on it, op
    concurrency pools (``pool="promotion"``) hold, and a step whose worker died fails its
    run at the next health check. (dagster-dask's executor does none of this: it hands the
    whole plan to Dask, which runs a step after a failed upstream one, so a model that
    failed the gate became champion; and its task names collide between runs of a job.)"""
    import dagster as dg
    from dagster._core.definitions.executor_definition import (
        multiple_process_executor_requirements,
    )
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.step_delegating import (
        CheckStepHealthResult,
        StepDelegatingExecutor,
        StepHandler,
    )
    from dagster_shared.serdes import serialize_value
    from distributed import Client

    class DaskStepHandler(StepHandler):
        def __init__(self):
            self._client = None
            self._futures = {}

        @property
        def name(self) -> str:
            return "dask"

        def _key(self, context) -> str:
            (step_key,) = context.execute_step_args.step_keys_to_execute
            return f"{step_key}-{context.execute_step_args.run_id}"

        def launch_step(self, step_handler_context):
            if self._client is None:
                self._client = Client(address, timeout=60)
            key = self._key(step_handler_context)
            self._futures[key] = self._client.submit(
                _execute_step, serialize_value(step_handler_context.execute_step_args),
                key=key, pure=False)
            (step_key,) = step_handler_context.execute_step_args.step_keys_to_execute
            yield dg.DagsterEvent.step_worker_starting(
                step_handler_context.get_step_context(step_key),
                message=f"Step submitted to the Dask scheduler at {address} as task {key}",
                metadata={"dask_task": key, "scheduler": address})

        def check_step_health(self, step_handler_context):
            future = self._futures.get(self._key(step_handler_context))
            if future is None:
                return CheckStepHealthResult.unhealthy("not submitted by this run's executor")
            if future.status == "error":
                return CheckStepHealthResult.unhealthy(
                    f"its Dask task failed: {future.exception()!r}")
            if future.status in ("cancelled", "lost"):
                return CheckStepHealthResult.unhealthy(f"its Dask task was {future.status}")
            return CheckStepHealthResult.healthy()

        def terminate_step(self, step_handler_context):
            future = self._futures.pop(self._key(step_handler_context), None)
            if future is not None:
                future.cancel()
            return iter(())

    @dg.executor(name="dask", requirements=multiple_process_executor_requirements())
    def _dask(_init_context):
        # Events are read from the instance every 0.25 s (the default 1 s adds a second per
        # step); a dead worker is noticed within 5 s.
        return StepDelegatingExecutor(DaskStepHandler(), retries=RetryMode.DISABLED,
                                      sleep_seconds=0.25, check_step_health_interval_seconds=5)

    return _dask


EXECUTOR_ENV = "MLOPS_EXECUTOR"
SCHEDULER_ENV = "MLOPS_DASK_SCHEDULER"


def executor_from_env():
    """Where a run's steps execute, a switch rather than a fork of the jobs.
    ``in_process`` (the default, embedded): in the run's own process, one after another.
    ``dask`` (the production profile): each step a task on the Dask cluster whose scheduler
    is at $MLOPS_DASK_SCHEDULER; its workers load this same code location, and read and write
    step outputs through the IO manager's base folder ($MLOPS_STORAGE_DIR), which all of them
    must see (one machine's disk here, a shared volume across machines)."""
    import dagster as dg

    kind = os.environ.get(EXECUTOR_ENV, "in_process")
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "dask":
        address = os.environ.get(SCHEDULER_ENV)
        if not address:
            raise ValueError(f"{EXECUTOR_ENV}=dask needs {SCHEDULER_ENV}, the Dask scheduler's "
                             "address (tcp://host:port)")
        return dask_executor(address)
    raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected 'in_process' or 'dask'")
