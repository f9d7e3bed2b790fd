"""Shared fixtures: a throwaway project home with a real SQLite Dagster instance in it."""

from __future__ import annotations

import os
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import orchestration
from mlops_assets.config import DatasetContract, Paths, load_contract
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.resources import GateResource
from mlops_assets.lib.dataset import data

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

# Every process a test starts (servers, daemons, run workers, Dask workers) inherits one
# thread per library: two xdist workers share two cores, and OpenMP threads that spin at
# barriers behind other work turn minutes into hours.
THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                  "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                                  "POLARS_MAX_THREADS", "RAYON_NUM_THREADS")}
for _name, _value in THREADS.items():
    os.environ.setdefault(_name, _value)
# Marks every process the test session starts (the environment is inherited down to
# grandchildren), so that what outlives the session can be found and named.
SESSION_MARK = "MLOPS_TEST_SESSION"


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller, before xdist starts its workers
        os.environ[SESSION_MARK] = uuid.uuid4().hex


def _left_behind(mark: str) -> list:
    import psutil

    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in mine:
            continue
        try:
            if proc.environ().get(SESSION_MARK) == mark and not _is_xdist_worker(proc):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.hookimpl(trylast=True)  # after xdist has stopped its workers
def pytest_sessionfinish(session, exitstatus):
    """The suite fails if a process it started outlives it (a server not stopped, a tail
    that ignores SIGTERM): each is named, then killed."""
    import psutil

    if hasattr(session.config, "workerinput") or SESSION_MARK not in os.environ:
        return
    mark = os.environ[SESSION_MARK]
    deadline = time.monotonic() + 15  # xdist workers and servers being stopped may be exiting
    left = _left_behind(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if not left:
        return
    lines = []
    for proc in left:
        try:
            lines.append(f"  pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    if lines:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"{len(lines)} process(es) started by the tests outlived them (killed now):\n"
            + "\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _is_xdist_worker(proc) -> bool:
    """An execnet gateway (how pytest-xdist starts its workers), or the helper process
    multiprocessing keeps for this process (it ends with it)."""
    cmd = " ".join(proc.cmdline())
    return "exec(eval(sys.stdin.readline()))" in cmd or (
        proc.ppid() == os.getpid() and "multiprocessing.resource_tracker" in cmd)


@dataclass
class Project:
    home: Path
    contract: DatasetContract
    defs: dg.Definitions
    instance: dg.DagsterInstance
    cursor: str | None = None  # the landing sensor's cursor, kept between ticks as the daemon does

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    def land(self, batch_id: str, df: pd.DataFrame) -> Path:
        return data.write_batch(df, self.paths.landing, batch_id, self.contract.source.separator)

    def ingest(self) -> tuple[dg.SensorResult, list[dg.ExecuteInProcessResult]]:
        """One tick of the landing sensor and the runs it asks for, on the real instance."""
        result = orchestration.tick_landing_sensor(self.defs, self.instance, self.cursor)
        self.cursor = result.cursor
        return result, orchestration.run_requests(self.defs, self.instance, result)

    def train(self, trials: int = 3, seed: int = 42) -> dg.ExecuteInProcessResult:
        config = {"n_trials": trials, "seed": seed}
        return orchestration.run_job(
            self.defs, self.instance, "train_and_promote", raise_on_error=False,
            run_config={"ops": {"candidate_model": {"config": config}}},
        )

    def stored_file(self, asset: str, partition: str | None = None) -> Path:
        """The IO manager's file of an asset's (or its partition's) latest materialization."""
        key = dg.AssetKey(asset)
        if partition is None:
            event = self.instance.get_latest_materialization_event(key)
            return next((self.paths.storage / asset).glob(f"{event.run_id}.*"))
        record = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records[0]
        return next((self.paths.storage / asset / partition).glob(f"{record.run_id}.*"))

    def output(self, run: dg.ExecuteInProcessResult, asset: str,
               partition: str | None = None) -> pd.DataFrame:
        """What ``run`` stored for an asset (or its partition): steps that work out of core
        hand the IO manager a file rather than a frame."""
        folder = self.paths.storage / asset
        return pd.read_parquet((folder / partition if partition else folder)
                               / f"{run.run_id}.parquet")

    def registry(self):
        from mlops_assets.lib.governance.registry import Registry

        return Registry(self.home)

    def build_dataset(self) -> dg.ExecuteInProcessResult:
        return orchestration.run_job(
            self.defs, self.instance, "build_dataset", raise_on_error=False
        )


def make_project(tmp_path: Path, contract_name: str = "bank", **gate):
    home = tmp_path / "home"
    dagster_home = orchestration.ensure_dagster_home(home / "dagster")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    defs = build_definitions(str(home), contract_name, GateResource(**gate))
    return Project(home, load_contract(contract_name), defs, instance)


def trained_project(tmp_path: Path, bank_batches, batches, trials: int = 3):
    """A project with ``batches`` ingested, the dataset built and a first champion (gate
    minimum AUC lowered to 0.6: a few small batches give a weaker model)."""
    project = make_project(tmp_path, min_auc=0.6)
    for key in batches:
        project.land(key, bank_batches[key])
    project.ingest()
    assert project.build_dataset().success
    first = project.train(trials=trials)
    assert first.success, orchestration.run_failure(project.instance, first.run_id)
    return project, first


@contextmanager
def trained_home(tmp_path: Path, monkeypatch, bank_batches, batches):
    """``trained_project`` with its own DAGSTER_HOME, its instance disposed after."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    project, first = trained_project(tmp_path, bank_batches, batches)
    try:
        yield project, first
    finally:
        project.instance.dispose()


def pytest_collection_modifyitems(config, items):
    """The long tests (real servers, whole pipelines) first: make test runs on two workers
    (-n 2 --dist load --maxschedchunk 1, which hands out tests in this order, one or two at a
    time), and a long test started last would leave one worker idle while it ran. Without
    --maxschedchunk, xdist sends each worker a first chunk of a quarter of its share (21
    tests here): every long test went to the first worker, one after the other."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 item.get_closest_marker("integration") is None))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    p = make_project(tmp_path)
    yield p
    p.instance.dispose()


@pytest.fixture(scope="session")
def bank_batches() -> dict[str, pd.DataFrame]:
    return data.source_batches(load_contract("bank"))


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Check evaluations of a run by ``asset:check``."""
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
