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

import pytest

from mlops_assets.procs import free_port
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
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # by PID, as a person's Ctrl-C
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert not answers(f"http://127.0.0.1:{port}/server_info")
    assert not answers(f"http://127.0.0.1:{reports_port}/api/version")
