"""The sealed split: a row's split is a pure function of its key, and the test keys are
recorded once in an append-only manifest that later checks hold every stage to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.config import BATCH, KEY, ROW_KEY, SPLIT, SPLITS, TARGET, DatasetContract
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


def apply_labels(rows: pd.DataFrame, labels: pd.DataFrame | None,
                 contract: DatasetContract) -> tuple[pd.DataFrame, int]:
    """Fill missing labels from label files (``labels``: id + label, joined on the
    contract's key column) and keep the labelled rows: ``(labelled rows, rows still
    waiting for a label)``. A label in a file never overrides one the row carried."""
    rows = rows.copy()
    if contract.key_column and labels is not None and len(labels) and KEY in rows:
        by_key = labels.drop_duplicates("request_id", keep="last").set_index("request_id")
        arrived = rows[KEY].map(by_key[TARGET]).astype("Int8")
        rows[TARGET] = rows[TARGET].fillna(arrived)
    waiting = rows[TARGET].isna()
    return rows[~waiting].reset_index(drop=True), int(waiting.sum())


def with_split(valid: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    out = valid.copy()
    out[SPLIT] = assign_split(out[ROW_KEY], contract.split_fractions)
    return out


def content_keys(rows: pd.DataFrame, contract: DatasetContract) -> pd.Series:
    """A hash of a row's content (features and label, typed): the same row landed twice,
    under another name or with other line endings, has the same key."""
    columns = [*contract.features, TARGET]
    return pd.Series(pd.util.hash_pandas_object(rows[columns], index=False).to_numpy(),
                     index=rows.index)


def split_duplicates(
    rows: pd.DataFrame, contract: DatasetContract, batch_order: list[str], sealed: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of one batch that repeat a row of another batch are set aside: ``(kept,
    duplicates)``, each duplicate with a ``reason`` naming the row it repeats. Within a group
    of twins the row kept is a sealed test row if there is one (the test set never moves),
    else the one from the batch ingested first. Repeats inside one batch are left alone:
    different people can share every value; a copy of a batch cannot."""
    keys = content_keys(rows, contract)
    rank = {b: i for i, b in enumerate(batch_order)}
    order = pd.DataFrame({
        "key": keys,
        "sealed": ~rows[ROW_KEY].isin(sealed),  # False sorts first: sealed rows win
        "batch_rank": rows[BATCH].map(rank).fillna(len(rank)),
        "row": rows[ROW_KEY],
    }).sort_values(["key", "sealed", "batch_rank", "row"])
    first = order.groupby("key", sort=False).head(1)
    keeper = pd.Series(first["row"].to_numpy(), index=first["key"].to_numpy())
    keeper_batch = pd.Series(rows.loc[first.index, BATCH].to_numpy(), index=first["key"])
    twin_of = keys.map(keeper)
    is_dup = (twin_of != rows[ROW_KEY]) & (rows[BATCH] != keys.map(keeper_batch))
    duplicates = rows[is_dup].copy()
    duplicates["reason"] = "duplicate of row " + twin_of[is_dup] + " (batch " \
        + keys[is_dup].map(keeper_batch) + ")"
    return rows[~is_dup].reset_index(drop=True), duplicates.reset_index(drop=True)


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
    sealed_missing: int = 0  # sealed rows no longer in the data at all
    batches_shrunk: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.overlaps.values()) and not self.sealed_moved \
            and not self.sealed_missing

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
        if self.sealed_missing:
            parts.append(
                f"{self.sealed_missing} sealed test rows of batch(es) {self.batches_shrunk} are "
                "no longer in the data: the batch was re-landed with fewer rows or rows that "
                "are now invalid or duplicates. The sealed test set may not shrink: re-land "
                "the batch as it was (its backup is under backup/<batch>/) and land new rows "
                "as a new batch"
            )
        return "; ".join(parts)

    def as_metadata(self) -> dict:
        return {
            **{f"overlap_{k.replace(' & ', '_')}": v for k, v in self.overlaps.items()},
            "sealed_test_rows": self.sealed_total,
            "sealed_rows_outside_test": self.sealed_moved,
            "sealed_rows_missing": self.sealed_missing,
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
    outside = sealed[~sealed[ROW_KEY].isin(sets["test"])]
    elsewhere = outside[ROW_KEY].isin(sets["train"] | sets["validation"])
    moved, gone = outside[elsewhere], outside[~elsewhere]
    return SplitAudit(overlaps, len(moved), moved[ROW_KEY].head(5).tolist(), len(sealed),
                      len(gone), sorted(gone[BATCH].unique()))


def leaked_test_rows(manifest: Path, keys: pd.Series) -> pd.Series:
    """Row keys among ``keys`` that are sealed test rows (must be empty for any training input)."""
    sealed = read_sealed(manifest)
    return keys[keys.isin(sealed[ROW_KEY])]
