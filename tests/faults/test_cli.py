"""Faults met at the command line: Ctrl-C in the middle of the demo, and a full disk under
the project home. Real CLI processes, a real instance, a real daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets import orchestration
from mlops_assets.config import PROJECT_ROOT
from mlops_assets.lib.governance.registry import Registry
from tests.helpers import contract_with_gate, wait_until

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "mlops-assets")


def _env(home: Path) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(home / "dagster"), "OMP_NUM_THREADS": "1"}


def _an_ingestion_running(home: Path) -> bool:
    """Read-only, from the run storage's own SQLite file: opening the instance here while the
    demo creates it made this process create its storage too, and a CI run got a schedule
    database stamped twice ("alembic_version has more than one head")."""
    db = home / "dagster" / "history" / "runs.db"
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=5)) as conn:
            return conn.execute("SELECT 1 FROM runs WHERE pipeline_name = ? AND status = ?",
                                ("ingest_batch", "STARTED")).fetchone() is not None
    except sqlite3.OperationalError:  # its tables not made yet
        return False


@pytest.mark.slow
def test_ctrl_c_during_the_demo_stops_in_one_line_and_the_rerun_finishes(tmp_path):
    home = tmp_path / "home"
    contract = contract_with_gate(tmp_path, min_auc=0.5)  # 3 periods, 1 trial: a weak model
    args = [CLI, "--home", str(home), "--contract", str(contract), "demo", "--periods", "3",
            "--trials", "1"]
    demo = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(home), cwd=PROJECT_ROOT, start_new_session=True)
    # Ctrl-C (SIGINT to the terminal's process group) while the batches are being ingested.
    wait_until(lambda: demo.poll() is not None or _an_ingestion_running(home), 180, 0.2,
               "an ingestion running")
    os.killpg(demo.pid, signal.SIGINT)
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 130, (out[-2000:], err[-2000:])
    assert err.strip().splitlines() == [
        "interrupted: `mlops-assets demo` stopped; run it again to finish what was "
        "interrupted"], err
    # No run is left waiting to start: a batch's run created but not started when the
    # Ctrl-C came stayed NOT_STARTED until run monitoring's 180-s start timeout, and the
    # rerun waited for it.
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        wait_until(lambda: all(r.status in orchestration.TERMINAL for r in instance.get_runs()),
                   30, 0.5, "every run of the interrupted demo ended")
    time.sleep(1)
    again = subprocess.run(args, capture_output=True, text=True, env=_env(home),
                           cwd=PROJECT_ROOT, timeout=900)
    assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
    assert "ingested 3 batches (0 failed)" in again.stdout, again.stdout
    assert "excluded" not in again.stdout + again.stderr
    assert Registry(home).champion() is not None


def _code_server_importing(pid: int) -> int | None:
    """The pid of the `dagster api grpc` child of ``pid``, once it is importing packages
    (a compiled module of the venv mapped: Python's own SIGINT handler is in place)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid or b"grpc" not in cmdline:
            continue
        with contextlib.suppress(OSError):
            if "site-packages" in (entry / "maps").read_text():
                return int(entry.name)
    return None


def test_ctrl_c_while_the_code_server_starts_is_one_line(tmp_path):
    """The code server a command starts shares its terminal's process group, so Ctrl-C
    reaches it too; caught importing the project, it printed a traceback on the terminal."""
    home = tmp_path / "home"
    cli = subprocess.Popen([CLI, "--home", str(home), "rollback"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=_env(home),
                           cwd=PROJECT_ROOT, start_new_session=True)
    wait_until(lambda: cli.poll() is not None or _code_server_importing(cli.pid), 120, 0.02,
               "a code server importing")
    os.killpg(cli.pid, signal.SIGINT)  # while it imports dagster and the definitions
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 130, (out[-2000:], err[-2000:])
    assert err.strip().splitlines() == [
        "interrupted: `mlops-assets rollback` stopped; run it again to finish what was "
        "interrupted"], err


def test_a_command_started_with_stderr_closed_still_runs(tmp_path):
    """`2>&-` (a cron line, a supervisor): no stderr to point back at after the code server
    was given its log."""
    home = tmp_path / "home"
    done = subprocess.run([CLI, "--home", str(home), "rollback"], stdout=subprocess.PIPE,
                          stderr=None, text=True, env=_env(home), cwd=PROJECT_ROOT,
                          timeout=120, pass_fds=(), close_fds=True,
                          preexec_fn=lambda: os.close(2))
    assert done.returncode == 1, done.stdout[-2000:]
    assert "rollback: run" in done.stdout, done.stdout[-2000:]  # launched, then refused
    assert "no champion to roll back from" in done.stdout, done.stdout[-2000:]


@pytest.fixture
def full_disk(tmp_path):
    """A project home on a 2 MiB tmpfs (root only), filled up; unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    home = folder / "home"
    first = subprocess.run([CLI, "--home", str(home), "batches"], capture_output=True,
                           text=True, env=_env(home), cwd=PROJECT_ROOT, timeout=120)
    assert first.returncode == 0, first.stderr
    with open(folder / "filler", "wb") as f:
        try:
            f.write(b"\0" * (4 << 20))
        except OSError:
            pass
    yield home
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("verb", [["batches"], ["rollback"], ["land", "--last", "1"]])
def test_a_full_disk_is_one_line_naming_the_cause(full_disk, verb):
    done = subprocess.run([CLI, "--home", str(full_disk), *verb], capture_output=True,
                          text=True, env=_env(full_disk), cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    assert "disk" in lines[0] or "No space left on device" in lines[0], lines[0]
