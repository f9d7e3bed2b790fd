"""The prediction log: one JSON line per prediction in date-partitioned files.

Each writer (one per server worker) appends to its own file,
``<root>/date=YYYY-MM-DD/<host>-<pid>-<start>.jsonl``, so workers never interleave, and every
write reaches the OS before the response leaves, so an answered prediction is on disk even if
the worker is killed right after. A write that fails (a full disk) leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mlops_assets.lib import io

FIELDS = ("ts", "request_id", "model_version", "variant", "inputs", "probability", "label",
          "latency_ms")


class PredictionLog:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._name = f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.jsonl"
        self._date: str | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _handle(self, date: str) -> int:
        if date != self._date or self._fd is None:
            if self._fd is not None:
                os.close(self._fd)
            folder = self.root / f"date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(folder / self._name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._date = date
        return self._fd

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` (each with the FIELDS) to the OS, all or none: if the disk is
        full, the partial write is cut off again and the OSError (ENOSPC) is raised, so the
        caller answers with an error instead of a prediction that is not in the log."""
        now = datetime.now(UTC)
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()
        with self._lock:
            fd = self._handle(now.strftime("%Y-%m-%d"))
            end = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                os.ftruncate(fd, end)
                raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None


def partitions(root: Path | str) -> list[str]:
    """The dates that have prediction log files."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.glob("date=*") if p.is_dir())


def read_log(root: Path | str, date: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All predictions (of one date), one row each (the inputs stay a dict column), and the
    lines that are not whole JSON records (a worker killed mid-write) with file and line
    number: those are set aside, the rest is read."""
    root = Path(root)
    pattern = f"date={date}/*.jsonl" if date else "date=*/*.jsonl"
    rows, torn = [], []
    for path in sorted(root.glob(pattern)):
        values, bad = io.read_json_lines(path)
        rows.extend(values)
        torn.extend({"file": str(path), "line": n, "reason": why} for n, why in bad)
    return (pd.DataFrame(rows, columns=list(FIELDS)),
            pd.DataFrame(torn, columns=["file", "line", "reason"]))


def read(root: Path | str, date: str | None = None) -> pd.DataFrame:
    """The predictions only (see ``read_log``)."""
    return read_log(root, date)[0]
