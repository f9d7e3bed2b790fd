"""The prediction log: one JSON line per prediction in date-partitioned files.

Each writer (one per server worker) appends to its own file,
``<root>/date=YYYY-MM-DD/<host>-<pid>-<start>.jsonl``, so workers never interleave, and every
write is flushed before the response leaves, so an answered prediction is on disk even if the
worker is killed right after.
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

FIELDS = ("ts", "request_id", "model_version", "variant", "inputs", "probability", "label",
          "latency_ms")


class PredictionLog:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._name = f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.jsonl"
        self._date: str | None = None
        self._file = None
        self._lock = threading.Lock()

    def _handle(self, date: str):
        if date != self._date or self._file is None:
            if self._file is not None:
                self._file.close()
            folder = self.root / f"date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            self._file = open(folder / self._name, "a", encoding="utf-8")  # noqa: SIM115
            self._date = date
        return self._file

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` (each with the FIELDS) and flush them to the OS."""
        now = datetime.now(UTC)
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        with self._lock:
            f = self._handle(now.strftime("%Y-%m-%d"))
            f.write(text)
            f.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None


def partitions(root: Path | str) -> list[str]:
    """The dates that have prediction log files."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.glob("date=*") if p.is_dir())


def read(root: Path | str, date: str | None = None) -> pd.DataFrame:
    """All predictions (of one date), one row each; the inputs stay a dict column."""
    root = Path(root)
    pattern = f"date={date}/*.jsonl" if date else "date=*/*.jsonl"
    rows = []
    for path in sorted(root.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return pd.DataFrame(rows, columns=list(FIELDS))
