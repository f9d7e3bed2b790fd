"""The sealed split: a row's split is a pure function of its key, and the test keys are
recorded once in an append-only manifest that later checks hold every stage to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.config import BATCH, ROW_KEY, SPLIT, SPLITS, DatasetContract
from mlops_assets.lib import io

# pandas' hash_array wants a 16-byte key; changing it would reshuffle every sealed split.
_SPLIT_HASH_KEY = "mlops-assets-spl"


def assign_split(keys: pd.Series, fractions: Iterable[float]) -> pd.Series:
    """train / validation / test from a keyed hash of the row key: the same key always lands
    in the same split, whatever else is in the dataset, so the test set never moves."""
    h = pd.util.hash_array(keys.to_numpy(dtype=object), hash_key=_SPLIT_HASH_KEY)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    edges = np.cumsum(list(fractions))[:-1]
    labels = np.asarray(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right")]
    return pd.Series(labels, index=keys.index)


def with_split(valid: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    out = valid.copy()
    out[SPLIT] = assign_split(out[ROW_KEY], contract.split_fractions)
    return out


@dataclass(frozen=True)
class Manifest:
    total: int
    added: int


def read_sealed(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        return pd.DataFrame({ROW_KEY: pd.Series(dtype=object), BATCH: pd.Series(dtype=object)})
    return pd.read_parquet(path)


def seal_test_keys(path: Path, assigned: pd.DataFrame) -> Manifest:
    """Add the test rows' keys to the manifest. Keys are only ever added, never removed."""
    sealed = read_sealed(path)
    test = assigned.loc[assigned[SPLIT] == "test", [ROW_KEY, BATCH]]
    new = test[~test[ROW_KEY].isin(sealed[ROW_KEY])]
    if len(new):
        io.write_parquet(path, pd.concat([sealed, new], ignore_index=True))
    return Manifest(total=len(sealed) + len(new), added=len(new))


@dataclass
class SplitAudit:
    overlaps: dict[str, int] = field(default_factory=dict)
    sealed_moved: int = 0
    sealed_examples: list[str] = field(default_factory=list)
    sealed_total: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.overlaps.values()) and self.sealed_moved == 0

    @property
    def summary(self) -> str:
        if self.ok:
            return f"splits disjoint; all {self.sealed_total} sealed test rows still in test"
        parts = [f"{n} rows in both {pair}" for pair, n in self.overlaps.items() if n]
        if self.sealed_moved:
            parts.append(
                f"{self.sealed_moved} sealed test rows are outside test, e.g. "
                f"{self.sealed_examples}"
            )
        return "; ".join(parts)

    def as_metadata(self) -> dict:
        return {
            **{f"overlap_{k.replace(' & ', '_')}": v for k, v in self.overlaps.items()},
            "sealed_test_rows": self.sealed_total,
            "sealed_rows_outside_test": self.sealed_moved,
        }


def audit(
    manifest: Path,
    *,
    train: pd.Series,
    validation: pd.Series,
    test: pd.Series,
    batches_present: set[str],
) -> SplitAudit:
    """Prove the splits are disjoint and that no sealed test row has left the test set."""
    sets = {"train": set(train), "validation": set(validation), "test": set(test)}
    overlaps = {
        f"{a} & {b}": len(sets[a] & sets[b])
        for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]
    }
    sealed = read_sealed(manifest)
    sealed = sealed[sealed[BATCH].isin(batches_present)]
    moved = sealed[~sealed[ROW_KEY].isin(sets["test"])][ROW_KEY]
    return SplitAudit(overlaps, len(moved), moved.head(5).tolist(), len(sealed))


def leaked_test_rows(manifest: Path, keys: pd.Series) -> pd.Series:
    """Row keys among ``keys`` that are sealed test rows (must be empty for any training input)."""
    sealed = read_sealed(manifest)
    return keys[keys.isin(sealed[ROW_KEY])]
