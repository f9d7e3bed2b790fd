"""The sealed split: a row's split is a pure function of its key, and the test keys are
recorded once in an append-only manifest that later checks hold every stage to."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_assets.config import BATCH, KEY, ROW_KEY, SPLIT, SPLITS, TARGET, DatasetContract
from mlops_assets.lib import io

# pandas' hash_array wants a 16-byte key; changing it would reshuffle every sealed split.
_SPLIT_HASH_KEY = "mlops-assets-spl"
# The narrow table the cross-batch step reads: one row per labelled row.
_KEYS_SCHEMA = pa.schema([("row_key", pa.string()), ("batch", pa.string()),
                          ("rank", pa.int32()), ("position", pa.int64()),
                          ("content", pa.uint64()), ("split", pa.string())])


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
    return _labelled(rows, _label_map(labels, contract))


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


@dataclass(frozen=True)
class Manifest:
    total: int
    added: int


@dataclass(frozen=True)
class SplitFiles:
    """The sealed split of many batches, written as Parquet files (one per split)."""

    paths: dict[str, Path]
    rows: dict[str, int]
    positives: dict[str, int]
    duplicates: pd.DataFrame  # rows set aside, each with the row it repeats
    unlabeled: int  # rows waiting for a label: kept in their batch, in no split
    manifest: Manifest


def split_batches(batches: list[tuple[str, Path]], labels: pd.DataFrame | None,
                  contract: DatasetContract, manifest: Path, out_dir: Path, *,
                  memory_limit: str = "1GB", chunk_rows: int = io.CHUNK_ROWS) -> SplitFiles:
    """Split the valid rows of ``batches`` (batch id, Parquet file; in the order they were
    ingested) out of core: memory is bounded by ``chunk_rows`` rows and DuckDB's
    ``memory_limit`` (it spills to ``out_dir`` past it), not by the number of rows.

    Each row is labelled from ``labels`` if it has none (rows still without a label wait,
    in no split), gets its split from its row key (``assign_split``) and a hash of its
    content. The one step that needs every row, finding rows of one batch that repeat a row
    of another, is a DuckDB window over the narrow (key, content hash) table: within a group
    of twins the row kept is a sealed test row if there is one (the test set never moves),
    else the one from the batch ingested first, else the smallest row key. Repeats inside
    one batch are left alone: different people can share every value; a copy of a batch
    cannot. New test keys are appended to the sealed ``manifest`` (atomically; keys are
    only ever added). A second pass writes each split's rows, in batch order."""
    import duckdb

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = _label_map(labels, contract)
    keys_path = out_dir / "keys.parquet"
    unlabeled = 0
    with pq.ParquetWriter(keys_path, _KEYS_SCHEMA) as keys:
        position = 0
        for rank, (batch, path) in enumerate(batches):
            for chunk in io.read_parquet_chunks(path, chunk_rows):
                rows, waiting = _labelled(chunk, labels)
                unlabeled += waiting
                keys.write_table(pa.table({
                    "row_key": rows[ROW_KEY].astype(str).to_numpy(),
                    "batch": np.full(len(rows), batch, dtype=object),
                    "rank": np.full(len(rows), rank, dtype=np.int32),
                    "position": np.arange(position, position + len(rows), dtype=np.int64),
                    "content": content_keys(rows, contract).to_numpy(np.uint64),
                    "split": assign_split(rows[ROW_KEY], contract.split_fractions).to_numpy(),
                }, schema=_KEYS_SCHEMA))
                position += len(rows)
    con = duckdb.connect(config={"memory_limit": memory_limit,
                                 "temp_directory": str(out_dir / "spill"),
                                 "preserve_insertion_order": False})
    try:
        con.execute(f"CREATE VIEW k AS SELECT * FROM read_parquet({_sql(keys_path)})")
        if Path(manifest).is_file():
            con.execute(f"CREATE VIEW sealed AS SELECT \"{ROW_KEY}\" AS row_key, \"{BATCH}\" "
                        f"AS batch, file_row_number AS n FROM read_parquet({_sql(manifest)}, "
                        "file_row_number = true)")
        else:
            con.execute("CREATE VIEW sealed AS SELECT NULL::VARCHAR AS row_key, "
                        "NULL::VARCHAR AS batch, NULL::BIGINT AS n WHERE false")
        con.execute("""
            CREATE TABLE decided AS
            WITH flagged AS (
                SELECT k.*, s.row_key IS NOT NULL AS sealed
                FROM k LEFT JOIN (SELECT DISTINCT row_key FROM sealed) s USING (row_key))
            SELECT row_key, batch, rank, position, split, sealed,
                   first_value(row_key) OVER w AS keeper,
                   first_value(batch) OVER w AS keeper_batch
            FROM flagged
            WINDOW w AS (PARTITION BY content ORDER BY NOT sealed, rank, row_key)""")
        con.execute("""
            CREATE TABLE duplicate AS SELECT row_key, rank, keeper, keeper_batch FROM decided
            WHERE row_key <> keeper AND batch <> keeper_batch""")
        con.execute("""
            CREATE TABLE new_test AS SELECT row_key, batch, position FROM decided
            WHERE split = 'test' AND NOT sealed
              AND row_key NOT IN (SELECT row_key FROM duplicate)""")
        added = con.execute("SELECT count(*) FROM new_test").fetchone()[0]
        total = con.execute("SELECT count(*) FROM sealed").fetchone()[0] + added
        if added:
            io.write_with(manifest, lambda tmp: con.execute(f"""
                COPY (SELECT row_key AS "{ROW_KEY}", batch AS "{BATCH}" FROM (
                    SELECT row_key, batch, 0 AS part, n FROM sealed
                    UNION ALL
                    SELECT row_key, batch, 1 AS part, position AS n FROM new_test)
                  ORDER BY part, n) TO {_sql(tmp)} (FORMAT parquet)"""))
        positives = dict.fromkeys(SPLITS, 0)
        duplicates, no_duplicates = [], None
        writers = {name: io.ParquetWriter(out_dir / f"{name}.parquet") for name in SPLITS}
        try:
            for rank, (_, path) in enumerate(batches):
                twins = con.execute("SELECT row_key, keeper, keeper_batch FROM duplicate "
                                    "WHERE rank = ?", [rank]).df().set_index("row_key")
                for chunk in io.read_parquet_chunks(path, chunk_rows):
                    rows, _ = _labelled(chunk, labels)
                    if no_duplicates is None:  # the columns, should no row be set aside
                        no_duplicates = rows.iloc[:0].assign(reason=pd.Series(dtype=object))
                    is_dup = rows[ROW_KEY].isin(twins.index)
                    if is_dup.any():
                        dup = rows[is_dup].copy()
                        twin = twins.loc[dup[ROW_KEY]]
                        dup["reason"] = ("duplicate of row " + twin["keeper"] + " (batch "
                                         + twin["keeper_batch"] + ")").to_numpy()
                        duplicates.append(dup)
                    kept = rows[~is_dup.to_numpy()]
                    kept = kept.assign(**{SPLIT: assign_split(kept[ROW_KEY],
                                                              contract.split_fractions)})
                    for name in SPLITS:
                        part = kept[kept[SPLIT] == name]
                        writers[name].write(part)
                        positives[name] += int(part[TARGET].sum())
        finally:
            for writer in writers.values():
                writer.close()
    finally:
        con.close()
    return SplitFiles({n: w.path for n, w in writers.items()},
                      {n: w.rows for n, w in writers.items()}, positives,
                      pd.concat(duplicates, ignore_index=True) if duplicates else no_duplicates,
                      unlabeled, Manifest(total=total, added=added))


def _sql(path: Path) -> str:
    """A path as an SQL string literal (a home directory may have a quote in its name)."""
    return "'" + str(path).replace("'", "''") + "'"


def _label_map(labels: pd.DataFrame | None, contract: DatasetContract) -> pd.Series | None:
    if not contract.key_column or labels is None or not len(labels):
        return None
    return labels.drop_duplicates("request_id", keep="last").set_index("request_id")[TARGET]


def _labelled(rows: pd.DataFrame, by_key: pd.Series | None) -> tuple[pd.DataFrame, int]:
    if by_key is not None and KEY in rows:
        rows = rows.copy()
        rows[TARGET] = rows[TARGET].fillna(rows[KEY].map(by_key).astype("Int8"))
    waiting = rows[TARGET].isna()
    return rows[~waiting].reset_index(drop=True), int(waiting.sum())


def read_sealed(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        return pd.DataFrame({ROW_KEY: pd.Series(dtype=object), BATCH: pd.Series(dtype=object)})
    return pd.read_parquet(path)


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


@contextmanager
def _duckdb(memory_limit: str = "1GB"):
    """An in-memory DuckDB connection held to ``memory_limit``, spilling to a temporary
    folder past it (removed after)."""
    import duckdb

    with io.scratch_dir(tempfile.gettempdir(), "mlops-duckdb") as spill:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(spill),
                                     "preserve_insertion_order": False})
        try:
            yield con
        finally:
            con.close()


def _sealed_view(con, manifest: Path) -> None:
    if Path(manifest).is_file():
        con.execute(f"CREATE VIEW sealed AS SELECT \"{ROW_KEY}\" AS row_key, \"{BATCH}\" AS "
                    f"batch FROM read_parquet({_sql(manifest)})")
    else:
        con.execute("CREATE VIEW sealed AS SELECT NULL::VARCHAR AS row_key, "
                    "NULL::VARCHAR AS batch WHERE false")


def audit(manifest: Path, *, train: Path, validation: Path, test: Path,
          memory_limit: str = "1GB") -> SplitAudit:
    """Prove the splits (Parquet files with row key and batch columns) are disjoint and that
    no sealed test row of a batch still in the data has left the test set. Run in DuckDB over
    the files, under ``memory_limit``: at 41M rows the key sets alone took 8 GB in Python."""
    with _duckdb(memory_limit) as con:
        for name, path in (("train", train), ("validation", validation), ("test", test)):
            con.execute(f"CREATE VIEW {name} AS SELECT \"{ROW_KEY}\" AS row_key, \"{BATCH}\" "
                        f"AS batch FROM read_parquet({_sql(path)})")
        _sealed_view(con, manifest)
        overlaps = {
            f"{a} & {b}": con.execute(f"SELECT count(*) FROM (SELECT row_key FROM {a} "
                                      f"INTERSECT SELECT row_key FROM {b})").fetchone()[0]
            for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]
        }
        con.execute("""
            CREATE TABLE outside AS
            WITH present AS (SELECT DISTINCT batch FROM test UNION SELECT DISTINCT batch
                             FROM train),
                 kept AS (SELECT s.* FROM sealed s SEMI JOIN present USING (batch))
            SELECT k.row_key, k.batch,
                   k.row_key IN (SELECT row_key FROM train UNION ALL
                                 SELECT row_key FROM validation) AS elsewhere
            FROM kept k ANTI JOIN test USING (row_key)""")
        total = con.execute("SELECT count(*) FROM sealed s SEMI JOIN (SELECT DISTINCT batch "
                            "FROM test UNION SELECT DISTINCT batch FROM train) USING (batch)"
                            ).fetchone()[0]
        moved = con.execute("SELECT count(*) FROM outside WHERE elsewhere").fetchone()[0]
        examples = [r[0] for r in con.execute("SELECT row_key FROM outside WHERE elsewhere "
                                              "ORDER BY row_key LIMIT 5").fetchall()]
        gone = con.execute("SELECT count(*) FROM outside WHERE NOT elsewhere").fetchone()[0]
        shrunk = [r[0] for r in con.execute("SELECT DISTINCT batch FROM outside WHERE NOT "
                                            "elsewhere ORDER BY batch").fetchall()]
    return SplitAudit(overlaps, moved, examples, total, gone, shrunk)


def leaked_test_rows(manifest: Path, stored: Path, memory_limit: str = "1GB"
                     ) -> tuple[int, int, list[str]]:
    """How many rows of the Parquet file ``stored`` there are, how many are sealed test rows
    (must be none for any training input) and up to five of those row keys; in DuckDB."""
    with _duckdb(memory_limit) as con:
        _sealed_view(con, manifest)
        con.execute(f"CREATE VIEW rows AS SELECT \"{ROW_KEY}\" AS row_key FROM "
                    f"read_parquet({_sql(stored)})")
        rows = con.execute("SELECT count(*) FROM rows").fetchone()[0]
        leaked = con.execute("SELECT count(*) FROM rows SEMI JOIN sealed USING (row_key)"
                             ).fetchone()[0]
        examples = [r[0] for r in con.execute(
            "SELECT row_key FROM rows SEMI JOIN sealed USING (row_key) ORDER BY row_key LIMIT 5"
        ).fetchall()]
    return rows, leaked, examples
