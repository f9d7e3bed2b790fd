"""`mlops-assets ui` as a new user runs it: from a shell where nothing is activated (the
venv's bin is not on PATH), on chosen ports on 127.0.0.1; the Dagster UI and the Evidently UI
both answer, and both stop when the command is stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from mlops_assets.platform.procs import free_port
from tests.helpers import answers, wait_until

pytestmark = pytest.mark.integration


def test_ui_starts_without_an_activated_venv_and_stops_cleanly(tmp_path):
    home = tmp_path / "home"
    port, reports_port = free_port(), free_port()
    exe = Path(sys.executable).parent / "mlops-assets"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DAGSTER"))}
    env["PATH"] = "/usr/bin:/bin"  # no venv on PATH: the command must find its own tools
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(exe), "--home", str(home), "ui", "--port", str(port), "--reports-port",
             str(reports_port)], stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=tmp_path, start_new_session=True)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/server_info"), 180, 1,
                   "the Dagster UI")
        wait_until(lambda: answers(f"http://127.0.0.1:{reports_port}/api/version"), 60, 1,
                   "the Evidently UI")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", headers={"Content-Type": "application/json"},
            data=json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            nodes = json.loads(r.read())["data"]["assetNodes"]
        assert {"candidate_model"} <= {n["assetKey"]["path"][0] for n in nodes}
        # The command prints the addresses once it has seen both answer itself.
        wait_until(lambda: "Reports (" in log.read_text(), 60, 0.5, "the addresses printed")
        text = log.read_text()
        assert f"Dagster UI:    http://127.0.0.1:{port}" in text
        assert f"Reports (Evidently UI): http://127.0.0.1:{reports_port}" in text
        # A second `ui` on the same port refuses at once, naming it, and starts nothing (no
        # second daemon on the instance).
        children = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        second = subprocess.run(
            [str(exe), "--home", str(home), "ui", "--port", str(port), "--reports-port",
             str(free_port())], capture_output=True, text=True, env=env, cwd=tmp_path,
            timeout=60)
        assert second.returncode == 2
        assert f"port {port} on 127.0.0.1 is in use" in second.stderr, second.stderr
        assert "Dagster UI:" not in second.stdout
        daemons = [p for p in psutil.process_iter(["cmdline"])
                   if "dagster-daemon" in " ".join(p.info["cmdline"] or [])
                   and str(home) in " ".join(p.environ().get(k, "") for k in ("DAGSTER_HOME",))]
        assert len(daemons) <= 1
    finally:
        # SIGTERM to the process group, as a supervisor stops it.
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert not answers(f"http://127.0.0.1:{port}/server_info")
    assert not answers(f"http://127.0.0.1:{reports_port}/api/version")
    assert not [pid for pid in children if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE], "children left"
