"""The sealed split's promise under operators' habits: a batch copied under another name (same
bytes, CRLF), re-landed bad and then good again, and a bad re-landing while a build runs.
After every build: no sealed test content in train or validation, no row of a batch whose
latest landing is blocked in any split. Real landing sensor, real runs, a real instance; the
concurrent case pauses a real build process (SIGSTOP) between judging and reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.config import BATCH, PROJECT_ROOT
from mlops_assets.lib.dataset import split
from tests.conftest import check_results
from tests.helpers import wait_until

GOOD = ("2008-05", "2008-06")


@pytest.fixture
def small(bank_batches) -> dict[str, pd.DataFrame]:
    return {k: bank_batches[k].head(1500).reset_index(drop=True) for k in GOOD}


def _splits(project, build) -> dict[str, pd.DataFrame]:
    return {s: project.output(build, f"{s}_set") for s in ("train", "validation", "test")}


def _contents(project, frame: pd.DataFrame) -> set:
    return set(split.content_keys(frame, project.contract))


def _assert_sealed_content_stays_in_test(project, build, sealed: set) -> dict:
    assert build.success, [c.description for c in check_results(build).values()
                           if not c.passed]
    parts = _splits(project, build)
    for name in ("train", "validation"):
        leaked = _contents(project, parts[name]) & sealed
        assert not leaked, f"{len(leaked)} sealed test rows' content in {name}"
    assert sealed <= _contents(project, parts["test"])
    return parts


def _with_unseen_jobs(df: pd.DataFrame, share: float) -> pd.DataFrame:
    bad = df.copy()
    bad.loc[: int(len(bad) * share) - 1, "job"] = "astronaut"
    return bad


def test_copies_and_a_bad_re_landing_never_move_sealed_rows_into_training(project, small):
    for key in GOOD:
        project.land(key, small[key])
    project.ingest()
    first = project.build_dataset()
    assert first.success
    sealed = _contents(project, _splits(project, first)["test"])
    manifest_rows = len(split.read_sealed(project.paths.sealed_test))
    original = (project.paths.landing / "2008-05.csv").read_bytes()
    # The same rows under two other names: CRLF line endings, and the very same bytes.
    (project.paths.landing / "2008-05-crlf.csv").write_bytes(original.replace(b"\n", b"\r\n"))
    (project.paths.landing / "2008-05-samebytes.csv").write_bytes(original)
    project.ingest()
    _assert_sealed_content_stays_in_test(project, project.build_dataset(), sealed)
    # The original re-landed with 30% unseen jobs: blocked, and its copies carry its rows.
    project.land("2008-05", _with_unseen_jobs(small["2008-05"], 0.3))
    _, runs = project.ingest()
    assert [r.success for r in runs] == [False]
    parts = _assert_sealed_content_stays_in_test(project, project.build_dataset(), sealed)
    assert not any(part[BATCH].eq("2008-05").any() for part in parts.values())
    # No row is new, so nothing is newly sealed.
    assert len(split.read_sealed(project.paths.sealed_test)) == manifest_rows
    # The original comes back, as it was and then with other line endings: both ingested,
    # both pass, and the sealed test set holds.
    for content in (original, original.replace(b"\n", b"\r\n")):
        (project.paths.landing / "2008-05.csv").write_bytes(content)
        _, runs = project.ingest()
        assert [r.success for r in runs] == [True], "the original was not ingested again"
        _assert_sealed_content_stays_in_test(project, project.build_dataset(), sealed)
    assert len(split.read_sealed(project.paths.sealed_test)) == manifest_rows


BUILD_PAUSED_BEFORE_READING = """
import os, signal, sys
import dagster as dg
from mlops_assets import orchestration
from mlops_assets.definitions import build_definitions
from mlops_assets.lib.dataset import split

real = split.split_batches


def paused(*args, **kwargs):
    # The build has judged which batches may pass; stop here until the test lets it go on.
    os.kill(os.getpid(), signal.SIGSTOP)
    return real(*args, **kwargs)


split.split_batches = paused
defs = build_definitions(sys.argv[1], "bank")
with dg.DagsterInstance.get() as instance:
    result = orchestration.run_job(defs, instance, "build_dataset", raise_on_error=False)
    print(result.run_id, "ok" if result.success else "failed")
"""


def _stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "T"


def test_a_bad_landing_during_a_build_reaches_no_split(project, small, tmp_path):
    for key in GOOD:
        project.land(key, small[key])
    project.ingest()
    script = tmp_path / "build.py"
    script.write_text(BUILD_PAUSED_BEFORE_READING)
    env = {**os.environ, "DAGSTER_HOME": str(project.home / "dagster"),
           "MLOPS_HOME": str(project.home), "PYTHONPATH": str(PROJECT_ROOT),
           "OMP_NUM_THREADS": "1"}
    build = subprocess.Popen([sys.executable, str(script), str(project.home)], env=env,
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        wait_until(lambda: build.poll() is not None or _stopped(build.pid), 120,
                   what="the build paused after judging the batches")
        assert build.poll() is None, build.stdout.read()
        # While it is paused, 2008-06 is landed again with every age 99 and a third of its
        # rows of an unseen job: its validated rows are written, then its check fails.
        bad = _with_unseen_jobs(small["2008-06"], 0.33)
        bad["age"] = "99"
        project.land("2008-06", bad)
        _, runs = project.ingest()
        assert [r.success for r in runs] == [False]
    finally:
        os.kill(build.pid, signal.SIGCONT)
    out, _ = build.communicate(timeout=300)
    run_id, outcome = out.strip().splitlines()[-1].split()
    assert outcome == "ok", out[-3000:]
    result = project.instance.get_run_by_id(run_id)
    assert result is not None
    for name in ("train", "validation", "test"):
        part = pd.read_parquet(project.stored_file(f"{name}_set"))
        assert not (part["age"] == 99).any(), f"rows of the blocked landing in {name}"
        # What was judged is what was read: the earlier landing of 2008-06, whole.
    rows = sum(len(pd.read_parquet(project.stored_file(f"{s}_set")))
               for s in ("train", "validation", "test"))
    assert rows == 3000 - len(pd.read_parquet(project.stored_file("duplicate_rows")))
