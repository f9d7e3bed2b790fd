"""Random operator sequences over Bank batches (hypothesis' stateful testing): land, copy under
another name, CRLF copy, re-land good or bad, build, retrain, kill a training run. After every
build: no sealed test content in train or validation, no row of a batch whose latest landing
is blocked in any split, the sealed manifest only grows; and once no run is alive the
promotion pool is free. Real sensor ticks, real runs, a real instance, real processes killed.

Seeded and bounded for `make test`; MLOPS_STATEFUL_EXAMPLES / MLOPS_STATEFUL_STEPS run it
longer (`make bench` does)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mlops_assets.config import BATCH, CONTENT, PROJECT_ROOT, load_contract
from mlops_assets.lib.dataset import data, split
from mlops_assets.platform.launcher import reap_dead_runs
from tests.conftest import make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BANK = load_contract("bank")
MONTHS = ("2008-05", "2008-06", "2008-07", "2008-08")
ROWS = 400  # rows of each month: enough for a test set, small enough for many builds
EXAMPLES = int(os.environ.get("MLOPS_STATEFUL_EXAMPLES", "3"))
STEPS = int(os.environ.get("MLOPS_STATEFUL_STEPS", "12"))
TRAIN_SCRIPT = Path(__file__).with_name("train_run.py")


def _source() -> dict[str, bytes]:
    batches = data.source_batches(BANK)
    return {m: batches[m].head(ROWS).to_csv(sep=";", index=False).encode() for m in MONTHS}


SOURCE = _source()


def _bad(good: bytes) -> bytes:
    """A third of the rows of an unseen job: the landing is blocked by its check."""
    frame = pd.read_csv(__import__("io").BytesIO(good), sep=";", dtype=str,
                        keep_default_na=False)
    frame.loc[: len(frame) // 3, "job"] = "astronaut"
    return frame.to_csv(sep=";", index=False).encode()


class Operators(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="stateful-"))
        os.environ["DAGSTER_HOME"] = str(self.tmp / "home" / "dagster")
        self.project = make_project(self.tmp)
        self.landing = self.project.paths.landing
        self.landing.mkdir(parents=True, exist_ok=True)
        self.latest_blocked: dict[str, bool] = {}  # batch -> is its latest landing blocked?
        self.manifest = split.read_sealed(self.project.paths.sealed_test)
        self.built = False
        self.killed = 0

    def teardown(self):
        self.project.instance.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _land(self, name: str, content: bytes, blocked: bool) -> None:
        data_path = self.landing / f"{name}.csv"
        tmp = self.landing / f".{name}.part"
        tmp.write_bytes(content)
        tmp.rename(data_path)
        _, runs = self.project.ingest()
        for run in runs:
            batch = run.dagster_run.tags["batch"]
            self.latest_blocked[batch] = not run.success
        assert name in self.latest_blocked
        assert self.latest_blocked[name] == blocked or not runs, (name, blocked)

    @rule(month=st.sampled_from(MONTHS))
    def land_good(self, month):
        self._land(month, SOURCE[month], blocked=False)

    @rule(month=st.sampled_from(MONTHS))
    def re_land_bad(self, month):
        self._land(month, _bad(SOURCE[month]), blocked=True)

    @rule(month=st.sampled_from(MONTHS), suffix=st.sampled_from(["copy", "again"]))
    def copy_same_bytes(self, month, suffix):
        self._land(f"{month}-{suffix}", SOURCE[month], blocked=False)

    @rule(month=st.sampled_from(MONTHS))
    def crlf_copy(self, month):
        self._land(f"{month}-crlf", SOURCE[month].replace(b"\n", b"\r\n"), blocked=False)

    @precondition(lambda self: any(not b for b in self.latest_blocked.values()))
    @rule()
    def build(self):
        result = self.project.build_dataset()
        assert result.success, self.project_failure(result)
        self.built = True
        parts = {s: self.project.output(result, f"{s}_set")
                 for s in ("train", "validation", "test")}
        manifest = split.read_sealed(self.project.paths.sealed_test)
        # The manifest only grows: what was sealed stays, in order.
        assert len(manifest) >= len(self.manifest)
        pd.testing.assert_frame_equal(manifest.head(len(self.manifest)).reset_index(drop=True),
                                      self.manifest.reset_index(drop=True))
        self.manifest = manifest
        sealed = set(manifest[CONTENT].dropna())
        for name in ("train", "validation"):
            # Contents recomputed from the rows, not read from the stored column.
            contents = set(split.content_keys(parts[name], BANK))
            assert not contents & sealed, f"sealed content in {name}"
        blocked = {b for b, bad in self.latest_blocked.items() if bad}
        for name, part in parts.items():
            assert not set(part[BATCH]) & blocked, f"rows of blocked {blocked} in {name}"
        assert sealed <= set(split.content_keys(parts["test"], BANK)) | self._absent(parts)

    def _absent(self, parts) -> set:
        """Sealed contents whose every carrier is excluded now (blocked, not landed again)."""
        present = set()
        for part in parts.values():
            present |= set(split.content_keys(part, BANK))
        return set(self.manifest[CONTENT].dropna()) - present

    def project_failure(self, result) -> str:
        from mlops_assets import orchestration

        return orchestration.run_failure(self.project.instance, result.run_id)

    @precondition(lambda self: self.built)
    @rule()
    def retrain(self):
        result = self.project.train(trials=1)
        # A weak model may be blocked by the gate; the run itself must end.
        assert result.dagster_run.status in (dg.DagsterRunStatus.SUCCESS,
                                             dg.DagsterRunStatus.FAILURE)

    @precondition(lambda self: self.built and self.killed < 2)
    @rule(after=st.floats(min_value=2.0, max_value=12.0))
    def kill_a_training_run(self, after):
        env = {**os.environ, "MLOPS_HOME": str(self.project.home), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(PROJECT_ROOT)}
        proc = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), str(self.project.home),
                                 "1", "1"], env=env, cwd=PROJECT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(after)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        self.killed += 1

    @invariant()
    def the_pool_is_free_once_no_run_is_alive(self):
        instance = self.project.instance
        reap_dead_runs(instance)  # what the next run (or the daemon) does first
        alive = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if not alive:
            info = instance.event_log_storage.get_concurrency_info("promotion")
            assert not info.claimed_slots, info.claimed_slots


Operators.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
    database=None, suppress_health_check=list(HealthCheck))
test_operator_sequences_never_leak_nor_stall = Operators.TestCase
