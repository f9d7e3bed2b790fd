"""Which stored versions may go. Every materialization is written once under its own version
(``<asset>/<run id>.*``, ``<asset>/<partition>/<run id>.*``) and never overwritten, so the
store grows with every run; this rule says what may be deleted, never what still refers to
it. A version is kept when it is:

- the latest of its asset (or partition) as of ``cutoff``, or newer than ``cutoff``
  (``cutoff`` is before the start of every run still in flight, which may have pinned the
  version that was latest when it started, and before a grace period);
- written by a run named in ``runs`` (runs in flight; the dataset builds registered models
  were trained on);
- a partition version named in ``partition_versions`` (the batch versions a registered model
  read; the versions the sealed manifest's rows were sealed from).

Anything else older than ``cutoff`` goes, including files that no recorded materialization
names (a run that died between writing and recording)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stored:
    asset: str
    partition: str | None
    run_id: str
    path: Path


def stored(root: Path) -> Iterator[Stored]:
    """Every stored version under the IO manager's ``root`` (hidden entries, such as a
    step's scratch directory, are not versions)."""
    root = Path(root)
    if not root.is_dir():
        return
    for asset in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(asset.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                for f in sorted(entry.iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        yield Stored(asset.name, entry.name, f.name.split(".")[0], f)
            elif entry.is_file():
                yield Stored(asset.name, None, entry.name.split(".")[0], entry)


@dataclass(frozen=True)
class Materialization:
    asset: str
    partition: str | None
    run_id: str
    timestamp: float


def current(materializations: Iterable[Materialization], cutoff: float
            ) -> set[tuple[str, str | None, str]]:
    """(asset, partition, run) of every version that was the latest as of ``cutoff`` or
    came after it."""
    by_key: dict[tuple[str, str | None], list[Materialization]] = {}
    for m in materializations:
        by_key.setdefault((m.asset, m.partition), []).append(m)
    keep = set()
    for (asset, partition), versions in by_key.items():
        for m in sorted(versions, key=lambda m: m.timestamp, reverse=True):
            keep.add((asset, partition, m.run_id))
            if m.timestamp < cutoff:
                break  # the one that was latest at the cutoff; older ones are superseded
    return keep


def collectable(files: Iterable[Stored], materializations: Iterable[Materialization],
                cutoff: float, runs: set[str],
                partition_versions: set[tuple[str, str]]) -> list[Stored]:
    """The stored versions the rule lets go (see the module's docstring)."""
    keep = current(materializations, cutoff)
    out = []
    for f in files:
        if ((f.asset, f.partition, f.run_id) in keep or f.run_id in runs
                or (f.partition is not None and (f.partition, f.run_id) in partition_versions)
                or f.path.stat().st_mtime >= cutoff):
            continue
        out.append(f)
    return out
