"""Child servers (bentoml serve, dagster-daemon, the webserver): start each in its own
session, wait until it answers, stop it by its PID with SIGTERM. Used by the replay and the
integration tests."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

_RESERVED: dict[int, socket.socket] = {}


def free_port() -> int:
    """A TCP port of 127.0.0.1 for a server this process starts, reserved until
    ``release_port`` or this process's exit: it stays bound here (SO_REUSEADDR, never
    listening), so the kernel gives it to no other socket asking for any port (a Dask
    worker's, an outgoing connection's), while the server told to use it binds and listens
    on it (uvicorn, circus for BentoML, PostgreSQL, tornado for Dask and gRPC all set
    SO_REUSEADDR). A port picked and let go at once can be given to another process in the
    seconds before the server binds it, and its readiness probe then reads that process.
    Linux only: where sockets follow BSD's rules (macOS) a server cannot bind a port another
    socket holds without SO_REUSEPORT, so there the port is picked and let go as before."""
    if sys.platform != "linux":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    reservation = socket.socket()
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.bind(("127.0.0.1", 0))
    port = reservation.getsockname()[1]
    _RESERVED[port] = reservation
    return port


def release_port(port: int) -> None:
    """End ``free_port``'s reservation (for long-lived processes that start many servers)."""
    reservation = _RESERVED.pop(port, None)
    if reservation is not None:
        reservation.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    """Until ``url`` answers 200; fails early with the log's tail if the process exits. An
    answer that is not HTTP (another program on the port) is waited past like a refused
    connection: the process then fails to bind and exits, and its log says why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def children_environment(env: dict[str, str]):
    """``env`` set in this process's environment for the duration, then restored: for the
    child processes a library starts from it (Dagster's code server and its runs)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Run in a small Python that then becomes ``cmd``: it asks Linux to send it SIGTERM when the
# process that started it dies (PR_SET_PDEATHSIG, kept across exec), and gives up if that
# process died already. Done so rather than in a ``preexec_fn``: that makes Python fork the
# whole parent (a 3 GB training step: a copy of its page tables, and its memory counted
# twice until the exec) and is unsafe in a process with threads, which every run has.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def start(cmd: list[str], log: Path, env: dict, cwd: Path,
          die_with_parent: bool = False) -> subprocess.Popen:
    """Run ``cmd`` in its own session (so its children stop with it), output to ``log``.
    ``die_with_parent``: the child gets SIGTERM if this process dies first (Linux), so a
    server a killed run started does not outlive it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if die_with_parent and sys.platform.startswith("linux"):
        cmd = [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=cwd,
            start_new_session=True,
        )


@contextmanager
def server(cmd: list[str], ready_url: str | None, log: Path, env: dict, cwd: Path,
           timeout=90.0, die_with_parent: bool = False):
    """Run ``cmd``; yield the Popen once ``ready_url`` answers 200 (at once if None); stop it
    by its PID on exit."""
    proc = start(cmd, log, env, cwd, die_with_parent)
    try:
        if ready_url:
            wait_http(ready_url, timeout, proc, log)
        yield proc
    finally:
        stop(proc)


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it is its own session), without waiting."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def stop_all(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every server's process group at once, then SIGKILL what is still up after
    ``grace`` seconds: stopping them one by one can outlast the grace its own parent gives
    it, and a child in its own session outlives a SIGKILLed parent. Stopped means every
    process the servers had started is gone too, not only the servers: a server may end
    before its own children (`dagster dev` before its webserver's code server), which then
    outlived the command that was said to have stopped them."""
    import psutil

    live = [p for p in procs if p.poll() is None]
    family = [d for p in live for d in _descendants(p)]
    for proc in live:
        terminate(proc)
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    left = _still_running(family, deadline)
    for straggler in left:
        with contextlib.suppress(psutil.Error):
            straggler.kill()
    _still_running(left, time.monotonic() + 5)


def _descendants(proc: subprocess.Popen) -> list:
    """The processes ``proc`` started, and theirs (psutil), as of now."""
    import psutil

    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []


def _still_running(processes: list, deadline: float) -> list:
    """Wait until every one of ``processes`` has ended (a zombie has: only its parent's
    wait is missing) or ``deadline`` (monotonic) passes; those still running."""
    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    left = [p for p in processes if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if running(p)]
    return left


def stop(proc: subprocess.Popen, grace: float = 20.0) -> int:
    """``stop_all`` of one server: its return code."""
    stop_all([proc], grace)
    return proc.returncode
