"""Driving the real Dagster instance from Python: the demo, the CLI and the tests use these so
they go through the same sensor and jobs a person triggers from the UI."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import dagster as dg

from mlops_assets.config import PROJECT_ROOT
from mlops_assets.defs.metadata import error_message, run_failure

DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"


def ensure_dagster_home(home: Path) -> Path:
    """Make ``home`` a DAGSTER_HOME whose dagster.yaml is the repository's (a symlink); with
    MLOPS_POSTGRES_URL set, a copy of it with PostgreSQL storage (the production profile)."""
    from mlops_assets.lib import io
    from mlops_assets.platform import postgres

    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if os.environ.get(postgres.URL_ENV):
        # Read by this process and every child through the instance config's env reference.
        os.environ[postgres.URL_ENV] = postgres.normalize_url(os.environ[postgres.URL_ENV])
        text = postgres.instance_config(DAGSTER_YAML, os.environ[postgres.URL_ENV])
        if link.is_symlink() or not link.is_file() or link.read_text() != text:
            link.unlink(missing_ok=True)
            io.write_text(link, text)
    elif not (link.is_symlink() and link.resolve() == DAGSTER_YAML):
        link.unlink(missing_ok=True)
        link.symlink_to(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def tick_landing_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate the landing sensor once against ``instance`` and register new partitions."""
    return tick_sensor(defs, instance, "landing_sensor", cursor)


def tick_sensor(defs: dg.Definitions, instance: dg.DagsterInstance, name: str,
                cursor: str | None = None) -> dg.SensorResult:
    """Evaluate a sensor once against ``instance`` and register the partitions it adds."""
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def run_requests(
    defs: dg.Definitions, instance: dg.DagsterInstance, result: dg.SensorResult,
    job_name: str = "ingest_batch",
) -> list[dg.ExecuteInProcessResult]:
    """Execute a sensor's run requests in this process, tagged as the daemon would tag them.
    The landing sensor's ingest_landed requests give the runs of their batches (what its op
    does: ``ingest``), one result per batch."""
    from mlops_assets.defs.ingestion.sensors import LandedConfig, ingest

    job = defs.resolve_job_def(job_name)
    outcomes = []
    for request in result.run_requests or []:
        landed = request.run_config.get("ops", {}).get("ingest_landed_batches")
        if landed:
            outcomes += ingest(defs.resolve_job_def("ingest_batch"), instance,
                               LandedConfig(**landed["config"]).requests())
            continue
        tags = {**request.tags, "dagster/run_key": request.run_key or ""}
        outcomes.append(
            job.execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=tags,
                raise_on_error=False,
            )
        )
    return outcomes


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A launched run's console is the terminal of whoever launched it: only what is fatal to
# the run itself. Its steps' errors are in the event log, and the CLI prints each in one line
# (``run_failure``), not a step's stack trace.
LAUNCHED = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_job(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, quiet: bool = False,
    run_config: dict | None = None, **kwargs
) -> dg.ExecuteInProcessResult:
    """Execute a job in this process on ``instance``; ``quiet`` keeps the console to warnings
    (the full event log is in the instance either way)."""
    from mlops_assets.platform.launcher import reap_dead_runs

    reap_dead_runs(instance)  # a dead run's pool slot would make this run wait for ever
    config = {**(run_config or {}), **(QUIET if quiet else {})}
    return defs.resolve_job_def(name).execute_in_process(
        instance=instance, run_config=config or None, **kwargs
    )


# --- runs launched through the instance (the CLI) -----------------------------------------

WORKSPACE_YAML = PROJECT_ROOT / "workspace.yaml"
# Written by `mlops-assets production` into DAGSTER_HOME while it runs, removed when it stops.
GRPC_WORKSPACE = "workspace.grpc.yaml"


def workspace_file(instance: dg.DagsterInstance) -> Path:
    """The code location runs are launched from: the production profile's code server while
    the profile runs on this instance (so a CLI run executes where the UI's and the
    sensors' do, with the profile's executor), else the code loaded from workspace.yaml."""
    from mlops_assets.platform import postgres

    grpc = Path(instance.root_directory) / GRPC_WORKSPACE
    return grpc if os.environ.get(postgres.URL_ENV) and grpc.is_file() else WORKSPACE_YAML
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED}


@contextlib.contextmanager
def _stderr_into(log: Path):
    """File descriptor 2 pointed at ``log`` (appended) for the duration: the processes
    started meanwhile keep it as their stderr; this process gets its own back."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if sys.stderr is not None:  # None when started with stderr closed (`2>&-`)
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        saved = None
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        if saved is None:
            os.close(2)
        else:
            os.dup2(saved, 2)
            os.close(saved)


class Launcher:
    """Runs created from the code location in ``workspace.yaml`` and started by the
    instance's run launcher, exactly as the UI starts them: they show on their job's page,
    can be re-executed from the UI, and run monitoring watches them. The console gets one
    line per step (and per search trial); the full event log is in the UI.

    With ``daemon=True`` a `dagster-daemon` runs for the duration (unless one is already
    running on this instance), so sensors such as the landing sensor do their part.
    ``preload``: the modules its runs find imported (defs/patches.py; by default the code
    location, LightGBM and Evidently), fewer for a command that runs one small job."""

    def __init__(self, instance: dg.DagsterInstance, echo=print, daemon: bool = False,
                 log_dir: Path | None = None, preload: tuple[str, ...] | None = None):
        self.instance = instance
        self.echo = echo
        self._want_daemon = daemon
        self._preload = preload
        self._log_dir = log_dir or Path(instance.root_directory)
        self._daemon = None
        self._context = None

    def __enter__(self) -> Launcher:
        # dagster keeps no public API for "create a run of a job in a code location"; these
        # are the calls `dagster job launch` makes.
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget

        from mlops_assets.defs.patches import PRELOAD_ENV
        from mlops_assets.platform import procs
        from mlops_assets.platform.launcher import reap_dead_runs

        reap_dead_runs(self.instance)  # before any run waits on a dead run's slot
        # The code server is this process's child in the terminal's process group, so a
        # Ctrl-C reaches it too; caught while it imports, it prints a traceback. Its stderr
        # (and its runs') goes to a log: the console keeps this command's one line.
        with (_stderr_into(self._log_dir / "cli-code-server.log"),
              procs.children_environment({PRELOAD_ENV: ",".join(self._preload)}
                                         if self._preload else {})):
            self._context = WorkspaceProcessContext(
                self.instance, WorkspaceFileTarget(paths=[str(workspace_file(self.instance))]),
                code_server_log_level="WARNING")
        self._context.__enter__()
        if self._want_daemon and not daemon_running(self.instance):
            # The daemon's sensors and runs use this command's code server: one server
            # loading the code (and one forkserver preloading it) instead of two.
            try:
                self._daemon = procs.start(
                    [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                     str(self._daemon_workspace())], self._log_dir / "cli-daemon.log", {},
                    PROJECT_ROOT)
            except BaseException:
                self._context.__exit__(*sys.exc_info())
                raise
        return self

    @property
    def uses_running_daemon(self) -> bool:
        """A daemon was asked for, and one already serving the instance is used instead."""
        return self._want_daemon and self._daemon is None

    def _daemon_workspace(self) -> Path:
        """A workspace file naming this launcher's code server (workspace.yaml if it has
        none of its own, as under the production profile)."""
        import yaml
        from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin

        workspace = self._context.create_request_context()
        name = workspace.code_location_names[0]
        location = workspace.get_code_location(name)
        address = {"socket": getattr(location, "_socket", None),
                   "port": getattr(location, "_port", None)}
        address = {k: v for k, v in address.items() if v}
        if not address or not isinstance(
                location.origin, ManagedGrpcPythonEnvCodeLocationOrigin):
            return workspace_file(self.instance)
        path = self._log_dir / "cli-daemon-workspace.yaml"
        path.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": location._host, **address, "location_name": name}}]}))  # noqa: SLF001
        return path

    def __exit__(self, *exc) -> None:
        if self._daemon is not None:  # first: it uses this launcher's code server
            from mlops_assets.platform import procs

            procs.stop(self._daemon)
        if self._context is not None:
            self._context.__exit__(*exc)

    def release_daemon(self) -> None:
        """Ask this launcher's daemon (if it started one) to stop now, without waiting for
        it: its sensor ticks would compete with the runs that follow for the two cores. It
        is reaped on exit."""
        if self._daemon is not None:
            from mlops_assets.platform import procs

            procs.terminate(self._daemon)

    def launch(self, job_name: str, run_config: dict | None = None,
               tags: dict | None = None) -> str:
        from dagster._cli.job import _create_run

        workspace = self._context.create_request_context()
        location = workspace.get_code_location(workspace.code_location_names[0])
        repo = next(iter(location.get_repositories().values()))
        # The console gets progress lines (see ``wait``), not the run's own DEBUG stream;
        # the event log keeps every event either way.
        run = _create_run(
            instance=self.instance, code_location=location, remote_repo=repo,
            remote_job=repo.get_full_job(job_name), run_config={**(run_config or {}), **LAUNCHED},
            tags=tags or {}, op_selection=None, run_id=None,
        )
        self.instance.launch_run(run.run_id, workspace)
        return run.run_id

    def run(self, job_name: str, run_config: dict | None = None, tags: dict | None = None,
            timeout_s: float = 3600) -> RunOutcome:
        run_id = self.launch(job_name, run_config, tags)
        self.echo(f"{job_name}: run {run_id}")
        return self.wait(run_id, timeout_s)

    def wait(self, run_id: str, timeout_s: float = 3600, poll_s: float = 0.5) -> RunOutcome:
        """Until the run ends, echoing its steps as they finish."""
        cursor, deadline = None, time.monotonic() + timeout_s
        while True:
            conn = self.instance.get_records_for_run(run_id, cursor=cursor, limit=1000)
            cursor = conn.cursor
            for record in conn.records:
                line = progress_line(record.event_log_entry)
                if line:
                    self.echo(line)
            run = self.instance.get_run_by_id(run_id)
            if run.status in TERMINAL and not conn.has_more:
                return RunOutcome(self.instance, run)
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {timeout_s} s "
                                   f"(status {run.status.value}); see it in the UI")
            time.sleep(poll_s)


def daemon_running(instance: dg.DagsterInstance, fresh_s: float = 60) -> bool:
    """Is a daemon serving this instance now? A fresh heartbeat alone is not enough: a
    daemon killed seconds ago (Ctrl-C, a stopped `ui`) leaves one for a minute, and a demo
    that trusted it would wait for a sensor that never ticks. On the embedded instance the
    daemon is a process on this machine with this DAGSTER_HOME; with PostgreSQL storage it may
    run on another host, and the heartbeat is all there is to go by."""
    from mlops_assets.platform import postgres

    beat = instance.get_daemon_heartbeats().get("SENSOR")
    if beat is None or time.time() - beat.timestamp >= fresh_s:
        return False
    return bool(os.environ.get(postgres.URL_ENV)) or _local_daemon(instance.root_directory)


def _local_daemon(dagster_home: str) -> bool:
    import psutil

    home = str(Path(dagster_home).resolve())
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "dagster-daemon run" not in cmd and "dagster._daemon" not in cmd:
            continue
        try:
            env_home = proc.environ().get("DAGSTER_HOME")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if env_home and str(Path(env_home).resolve()) == home:
            return True
    return False


def progress_line(entry) -> str | None:
    """One console line for the events a person follows: a step done or failed (with its
    time), a failed check with its reason, a search trial."""
    event = entry.dagster_event
    if event is None:
        message = entry.user_message or ""
        if message.startswith("trial "):
            return "    " + message.split("; params")[0]  # the parameters are in the UI
        return f"    {message[:160]}" if message.startswith("best of ") else None
    kind = event.event_type
    if kind == dg.DagsterEventType.STEP_SUCCESS:
        return f"  {event.step_key}: ok ({event.event_specific_data.duration_ms / 1000:.1f} s)"
    if kind == dg.DagsterEventType.STEP_FAILURE:
        error = event.step_failure_data.error
        error = (error.cause or error) if error else None
        return f"  {event.step_key}: FAILED" + (f": {error_message(error)}" if error else "")
    if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = event.event_specific_data
        if not evaluation.passed:
            return f"  check {evaluation.check_name} failed: {evaluation.description}"
    return None


class RunOutcome:
    """A finished run, as the CLI reports it."""

    def __init__(self, instance: dg.DagsterInstance, run: dg.DagsterRun):
        self.instance, self.run = instance, run
        self.run_id, self.success = run.run_id, run.status == dg.DagsterRunStatus.SUCCESS

    def materialization(self, asset: str) -> dict:
        """The metadata of ``asset``'s materialization in this run ({} if none)."""
        records = self.instance.get_records_for_run(
            self.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in records:
            mat = record.event_log_entry.asset_materialization
            if mat and mat.asset_key.to_user_string() == asset:
                return {k: v.value for k, v in mat.metadata.items()}
        return {}

    def failure(self) -> str:
        return run_failure(self.instance, self.run_id)




def wait_for_ingestion(instance: dg.DagsterInstance, landed: list[Path], echo=print,
                       timeout_s: float = 900) -> list[dg.DagsterRun]:
    """Until the landing sensor's ingestion of each landed file (its runs are tagged with the
    file's content hash) has finished; an ingestion that was interrupted is waited for again,
    as the sensor runs it again; a file whose content was ingested before needs no run.
    Returns the last run of each."""
    from mlops_assets.defs.ingestion.sensors import (
        MAX_ATTEMPTS,
        attempts,
        ingested_version,
        interrupted,
    )
    from mlops_assets.lib import io

    keys = {p.stem: io.sha256_file(p) for p in landed}
    done: dict[str, dg.DagsterRun | None] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(keys):
        for batch, sha in keys.items():
            if batch in done:
                continue
            runs = attempts(instance, batch, sha)
            if runs and runs[0].status in TERMINAL:
                if len(runs) < MAX_ATTEMPTS and interrupted(instance, runs[0]):
                    continue  # the sensor ingests it again
                done[batch] = runs[0]
                echo(f"  {batch}: {runs[0].status.value.lower()}")
            elif not runs and ingested_version(instance, batch) == sha:
                done[batch] = None
                echo(f"  {batch}: already ingested with this content")
        if time.monotonic() > deadline:
            missing = sorted(set(keys) - set(done))
            raise TimeoutError(
                f"batches {missing} not ingested after {timeout_s} s: is landing_sensor "
                "running (Dagster UI > Automation)? Its last skip reason says why")
        time.sleep(0.25)
    return [r for r in done.values() if r is not None]
