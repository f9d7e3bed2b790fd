"""Child servers' ports and readiness, and the environment handed to children a library
starts."""

from __future__ import annotations

import os
import socket
import sys
import threading

import pytest

from mlops_assets.platform.procs import children_environment, free_port, start, wait_http


def test_children_environment_sets_then_restores_even_on_error(monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_KEPT", "before")
    monkeypatch.delenv("MLOPS_TEST_NEW", raising=False)
    with pytest.raises(RuntimeError), children_environment(
            {"MLOPS_TEST_KEPT": "during", "MLOPS_TEST_NEW": "during"}):
        assert os.environ["MLOPS_TEST_KEPT"] == os.environ["MLOPS_TEST_NEW"] == "during"
        raise RuntimeError
    assert os.environ["MLOPS_TEST_KEPT"] == "before"
    assert "MLOPS_TEST_NEW" not in os.environ


@pytest.mark.skipif(sys.platform != "linux", reason="ports are reserved on Linux only")
def test_a_port_handed_out_goes_to_no_one_else_and_its_server_can_bind_it():
    """A CI run failed when a deploy check's port, free when picked, was given by the kernel
    to another process's server (Dask's, asking for any port) before `bentoml serve` bound
    it: the check's readiness probe read that server's bytes. A port handed out stays
    reserved: no `bind(("127.0.0.1", 0))` (the kernel's choice) gets it, while the server
    it is for (servers set SO_REUSEADDR) binds and listens on it."""
    port = free_port()
    given = set()
    for _ in range(300_000):  # the kernel gave a released port back within 1,327-40,862
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            given.add(other.getsockname()[1])
        if port in given:
            break
    assert port not in given, f"port {port} was given to another socket"
    with socket.socket() as served:
        served.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        served.bind(("127.0.0.1", port))
        served.listen()


def test_a_foreign_server_on_the_port_is_not_taken_for_the_child(tmp_path):
    """Something that is not HTTP answers on the port and the child cannot bind it: the
    wait ends with the child's own exit and its log, not with the stranger's bytes."""
    port = free_port()
    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stranger.bind(("127.0.0.1", port))
    stranger.listen()

    def garble():
        while True:
            try:
                conn, _ = stranger.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01garbage\r\n\r\n")

    threading.Thread(target=garble, daemon=True).start()
    log = tmp_path / "child.log"
    child = start([sys.executable, "-c", "import time; time.sleep(1); "
                   f"import http.server as h; h.HTTPServer(('127.0.0.1', {port}), "
                   "h.BaseHTTPRequestHandler).serve_forever()"], log, {}, tmp_path)
    try:
        with pytest.raises(RuntimeError, match="Address already in use"):
            wait_http(f"http://127.0.0.1:{port}/readyz", 30, child, log)
    finally:
        child.kill()
        child.wait()
        stranger.close()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_to_die_with_its_parent_does_and_is_its_command(tmp_path):
    """The deploy check's server must not outlive a run killed during the check. The child
    is the command itself (a small Python sets the death signal, then becomes it: no fork of
    the parent's memory, no preexec_fn in a process with threads), and it stops when the
    process that started it is killed with SIGKILL."""
    import signal
    import subprocess
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path\n"
         "from mlops_assets.platform.procs import start\n"
         f"child = start(['sleep', '120'], Path({str(tmp_path / 'child.log')!r}), {{}}, "
         f"Path({str(tmp_path)!r}), die_with_parent=True)\n"
         "print(child.pid, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        for _ in range(200):  # the exec into `sleep` (bounded wait)
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0] == b"sleep":
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"child {child} never became `sleep`")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(200):  # gone: reaped by init once SIGTERM ended it (bounded wait)
            try:
                with open(f"/proc/{child}/stat") as f:
                    if f.read().split(") ")[1].startswith("Z"):
                        break
            except FileNotFoundError:
                break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail(f"child {child} outlived its killed parent")
    finally:
        parent.kill()


def test_a_stopped_server_s_own_children_are_gone_when_stop_returns(tmp_path):
    """`mlops-assets ui` stops `dagster dev` by its PID; `dagster dev` ended before its
    webserver's code server, which outlived the command (a CI run: "children left"). A
    server here ends at once on SIGTERM while its child takes a moment: when ``stop_all``
    returns, both are gone; a child that ignores SIGTERM is killed after the grace."""
    import subprocess

    import psutil

    from mlops_assets.platform.procs import stop_all

    child = tmp_path / "child.py"
    child.write_text(
        "import signal, sys, time\n"
        "asked = []\n"
        "signal.signal(signal.SIGTERM, lambda *_: asked.append(1))\n"
        "print('up', flush=True)\n"
        "while not asked:\n    time.sleep(0.05)\n"
        "if sys.argv[1] == 'slow':\n    time.sleep(1.5)\n    sys.exit(0)\n"
        "while True:\n    time.sleep(1)\n")  # 'stubborn': never ends by itself
    for kind, grace in (("slow", 10.0), ("stubborn", 1.0)):
        server = tmp_path / f"server_{kind}.py"
        server.write_text(
            "import subprocess, sys, time\n"
            f"c = subprocess.Popen([sys.executable, {str(child)!r}, {kind!r}], "
            "stdout=subprocess.PIPE, text=True)\n"
            "c.stdout.readline()\nprint(c.pid, flush=True)\ntime.sleep(120)\n")
        proc = subprocess.Popen([sys.executable, str(server)], stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
        pid = int(proc.stdout.readline())
        stop_all([proc], grace=grace)
        assert proc.returncode is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == \
            psutil.STATUS_ZOMBIE, f"the {kind} child outlived stop_all"
