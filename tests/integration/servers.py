"""Start a real server as a child process on 127.0.0.1 and a free port; stop it by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server(cmd: list[str], ready_url: str, log: Path, env: dict, cwd: Path, timeout=90.0):
    """Run ``cmd`` in its own process group; yield the Popen once ``ready_url`` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=cwd,
            start_new_session=True,
        )
    try:
        wait_http(ready_url, timeout, proc, log)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 20.0) -> int:
    """SIGTERM the server's process group (it is its own session), then SIGKILL if needed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode
