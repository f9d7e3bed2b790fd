"""The rows of a features file that training reads, a chunk at a time: what a training set
larger than memory is read through (its labels, a deterministic sample, its feature matrix
chunk by chunk as a ``lightgbm.Sequence``). Here, below both training modules, so the local
search (``training/search.py``) and the Dask fit (``training/dask_training.py``) read rows
the same way without importing each other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD, TARGET, DatasetContract
from mlops_assets.lib import io
from mlops_assets.lib.dataset.features import to_matrix

STREAMED = "local, streamed from the features file"


@dataclass(frozen=True)
class FeatureRows:
    """The rows of a features Parquet file that training reads (the features, the label, the
    period; never the row keys), a chunk at a time: only ``periods``' rows when given. What
    a training set larger than memory is read through: its labels, a deterministic sample,
    and its feature matrix chunk by chunk (``lightgbm_sequence``)."""

    path: Path
    contract: DatasetContract
    periods: tuple[str, ...] | None = None
    chunk_rows: int = io.CHUNK_ROWS

    def _chunks(self, columns: list[str]) -> Iterator[pd.DataFrame]:
        read = columns if self.periods is None or PERIOD in columns else [*columns, PERIOD]
        for chunk in io.read_parquet_chunks(self.path, self.chunk_rows, read):
            yield chunk if self.periods is None else chunk[chunk[PERIOD].isin(self.periods)]

    def chunks(self) -> Iterator[pd.DataFrame]:
        return self._chunks([*self.contract.features, TARGET, PERIOD])

    def only(self, periods: list[str]) -> FeatureRows:
        return replace(self, periods=tuple(periods))

    def frame(self) -> pd.DataFrame:
        """Every row at once (a training set, or the test rows, that fit in memory). The
        period is categorical: a string per row took 377 MB of the 6.2M 1000x test rows."""
        parts = list(self.chunks())
        periods = pd.CategoricalDtype(sorted(set().union(*(p[PERIOD].unique() for p in parts))))
        for part in parts:
            part[PERIOD] = part[PERIOD].astype(periods)
        return pd.concat(parts, ignore_index=True)

    def __len__(self) -> int:
        if self.periods is None:
            return io.parquet_rows(self.path)
        return sum(len(chunk) for chunk in self._chunks([PERIOD]))

    def labels(self) -> np.ndarray:
        return np.concatenate([chunk[TARGET].to_numpy(np.float32)
                               for chunk in self._chunks([TARGET])])

    def period_counts(self) -> pd.Series:
        """Rows per period, by period."""
        counts = [chunk[PERIOD].value_counts() for chunk in self._chunks([PERIOD])]
        return (pd.concat(counts).groupby(level=0).sum() if counts
                else pd.Series(dtype="int64")).sort_index()

    def period_values(self) -> list[str]:
        """The periods the rows come from, sorted."""
        return list(self.period_counts().index)

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        """A deterministic sample of at most ``n`` rows, in file order
        (``io.sample_positions``)."""
        return io.take_rows(self.chunks(), io.sample_positions(len(self), n, seed))

    def lightgbm_sequence(self, rows: int):
        """The feature matrix as a ``lightgbm.Sequence`` of ``rows`` rows, read a chunk at a
        time in order (LightGBM reads a Sequence front to back in ``batch_size`` slices)."""
        import lightgbm as lgb

        source = self

        class Chunked(lgb.Sequence):
            batch_size = source.chunk_rows

            def __init__(self):
                self._chunks = (to_matrix(c, source.contract) for c in source.chunks())
                self._buffer = np.empty((0, len(source.contract.features)))
                self._start = 0  # the file row the buffer starts at

            def __len__(self) -> int:
                return rows

            def __getitem__(self, idx):
                if not isinstance(idx, slice) or idx.start < self._start:
                    raise TypeError(f"rows are read front to back in slices, not {idx!r}")
                while self._start + len(self._buffer) < min(idx.stop, rows):
                    self._buffer = np.concatenate([self._buffer, next(self._chunks)])
                skip = idx.start - self._start
                self._buffer, self._start = self._buffer[skip:], idx.start
                return self._buffer[: idx.stop - idx.start]

        return Chunked()
