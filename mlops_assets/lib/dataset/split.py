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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlops_assets.config import (
    BATCH,
    CONTENT,
    KEY,
    ROW_KEY,
    SPLIT,
    SPLITS,
    TARGET,
    VERSION,
    DatasetContract,
)
from mlops_assets.lib import io

# The narrow table the cross-batch step reads: one row per labelled row.
_KEYS_SCHEMA = pa.schema([("row_key", pa.string()), ("batch", pa.string()),
                          ("rank", pa.int32()), ("position", pa.int64()),
                          ("content", pa.uint64()), ("split", pa.string())])
# The sealed manifest: one row per content ever sealed to test, with the row (key, batch and
# the stored version of that batch) it was first sealed from.
_MANIFEST_SCHEMA = pa.schema([(CONTENT, pa.uint64()), (ROW_KEY, pa.string()),
                              (BATCH, pa.string()), (VERSION, pa.string())])


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: the content hashes' bits, well mixed, so that the split
    does not follow the way pandas combines column hashes."""
    with np.errstate(over="ignore"):
        z = h + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def assign_split(content: pd.Series, fractions: Iterable[float]) -> pd.Series:
    """train / validation / test from a row's content hash (``content_keys``): the same
    content always lands in the same split, whichever file carries it, under whatever name
    and whatever else is in the dataset, so a copy of a row can never sit on the other side
    of the sealed test set."""
    labels = np.asarray(SPLITS, dtype=object)[_split_codes(content, fractions)]
    return pd.Series(labels, index=getattr(content, "index", None))


def _split_codes(content, fractions: Iterable[float]) -> np.ndarray:
    """``assign_split`` as positions in ``SPLITS``."""
    h = _mix(np.asarray(content, dtype=np.uint64))
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    edges = np.cumsum(list(fractions))[:-1]
    return np.searchsorted(edges, u, side="right").astype(np.int8)


def apply_labels(rows: pd.DataFrame, labels: pd.DataFrame | None,
                 contract: DatasetContract) -> tuple[pd.DataFrame, int]:
    """Fill missing labels from label files (``labels``: id + label, joined on the
    contract's key column) and keep the labelled rows: ``(labelled rows, rows still
    waiting for a label)``. A label in a file never overrides one the row carried."""
    table, waiting = _labelled_table(pa.Table.from_pandas(rows, preserve_index=False),
                                     _label_map(labels, contract))
    return table.to_pandas(), waiting


def with_split(valid: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    out = valid.copy()
    out[SPLIT] = assign_split(content_keys(out, contract), contract.split_fractions).to_numpy()
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
                  versions: dict[str, str] | None = None, memory_limit: str = "1GB",
                  chunk_rows: int = io.CHUNK_ROWS) -> SplitFiles:
    """Split the valid rows of ``batches`` (batch id, Parquet file; in the order they were
    ingested; ``versions``: each batch's stored version, recorded with what it seals) out of
    core: memory is bounded by ``chunk_rows`` rows and DuckDB's ``memory_limit`` (it spills
    to ``out_dir`` past it), not by the number of rows.

    Each row is labelled from ``labels`` if it has none (rows still without a label wait,
    in no split) and gets a hash of its content. The content decides everything: a content
    in the sealed ``manifest`` is test, whichever file carries it; any other goes where its
    hash sends it (``assign_split``). The one step that needs every row, finding rows of one
    batch that repeat a row of another, runs in DuckDB over the narrow (key, content) table
    (an aggregate finds the contents in more than one batch, a window orders their rows):
    of a group of twins, the row of the batch ingested first is kept. Repeats inside
    one batch are left alone (different people can share every value; a copy of a batch
    cannot); they share a split. New test contents are appended to the manifest (atomically;
    contents are only ever added). A second pass writes each split's rows, in batch order,
    with their content hash (``CONTENT``)."""
    import duckdb

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = _label_map(labels, contract)
    versions = versions or {}
    keys_path = out_dir / "keys.parquet"
    unlabeled = 0
    layout = None  # the split files' columns: a batch's, and its rows' content hashes
    with pq.ParquetWriter(keys_path, _KEYS_SCHEMA) as keys:
        position = 0
        for rank, (batch, path) in enumerate(batches):
            for chunk in io.read_parquet_tables(path, chunk_rows, dictionary=contract.categorical):
                layout = layout or _layout(chunk)
                rows, waiting = _labelled_table(chunk, labels)
                unlabeled += waiting
                content = _content_of(rows, contract)
                n = rows.num_rows
                keys.write_table(pa.table({
                    "row_key": rows[ROW_KEY].cast(pa.string()),
                    "batch": pa.repeat(pa.scalar(batch), n),
                    "rank": np.full(n, rank, dtype=np.int32),
                    "position": np.arange(position, position + n, dtype=np.int64),
                    "content": content,
                    "split": _split_names(_split_codes(content, contract.split_fractions)),
                }, schema=_KEYS_SCHEMA))
                position += n
    con = duckdb.connect(config={"memory_limit": memory_limit,
                                 "temp_directory": str(out_dir / "spill"),
                                 "preserve_insertion_order": False})
    try:
        con.execute(f"CREATE VIEW k AS SELECT * FROM read_parquet({_sql(keys_path)})")
        migrated = _load_sealed(con, manifest)
        con.execute("CREATE TABLE sealed_content AS SELECT DISTINCT content FROM sealed "
                    "WHERE content IS NOT NULL")
        # Twins across batches: only a content found in more than one batch can have one, so
        # the window (a sort) runs over those rows only, found by a hash aggregate. At 41M
        # rows: 9 s against 56 s for the window over every row (distinct rows, 1% repeated).
        con.execute("""
            CREATE TABLE shared AS SELECT content FROM k GROUP BY content
            HAVING min(rank) < max(rank)""")
        con.execute("""
            CREATE TABLE duplicate AS SELECT row_key, rank, keeper, keeper_batch FROM (
                SELECT k.row_key, k.batch, k.rank,
                       first_value(k.row_key) OVER w AS keeper,
                       first_value(k.batch) OVER w AS keeper_batch
                FROM k SEMI JOIN shared USING (content)
                WINDOW w AS (PARTITION BY k.content ORDER BY k.rank, k.position))
            WHERE row_key <> keeper AND batch <> keeper_batch""")
        # Test contents not sealed yet (a sealed content is test wherever it is), first seen
        # in a row that is not set aside as a twin.
        con.execute("""
            CREATE TABLE new_test AS
            SELECT k.content, arg_min(k.row_key, k.position) AS row_key,
                   arg_min(k.batch, k.position) AS batch, min(k.position) AS n
            FROM k ANTI JOIN sealed_content USING (content)
                   ANTI JOIN duplicate USING (row_key)
            WHERE k.split = 'test'
            GROUP BY k.content""")
        added = con.execute("SELECT count(*) FROM new_test").fetchall()[0][0]
        total = con.execute("SELECT count(*) FROM sealed").fetchall()[0][0] + added
        if added or migrated:
            con.register("batch_versions", pd.DataFrame(
                {"batch": list(versions), "version": list(versions.values())},
                columns=["batch", "version"]).astype(object))
            io.write_with(manifest, lambda tmp: con.execute(f"""
                COPY (SELECT content::UBIGINT AS "{CONTENT}", row_key AS "{ROW_KEY}",
                             batch AS "{BATCH}", version::VARCHAR AS "{VERSION}" FROM (
                    SELECT content, row_key, batch, version, 0 AS part, n FROM sealed
                    UNION ALL
                    SELECT t.content, t.row_key, t.batch, v.version, 1 AS part, t.n
                    FROM new_test t LEFT JOIN batch_versions v USING (batch))
                  ORDER BY part, n) TO {_sql(tmp)} (FORMAT parquet)"""))
        sealed = np.sort(con.execute("SELECT content FROM sealed_content UNION "
                                     "SELECT content FROM new_test").fetchnumpy()["content"]
                         .astype(np.uint64))
        positives = dict.fromkeys(SPLITS, 0)
        duplicates = []
        layout = layout or _layout(pa.table({}))
        writers = {name: io.ParquetWriter(out_dir / f"{name}.parquet", layout, plain=[ROW_KEY])
                   for name in SPLITS}
        test = SPLITS.index("test")
        # The first pass's hashes, in its order (which this pass repeats): hashed once.
        contents = _Column(keys_path, "content", chunk_rows)
        try:
            for rank, (_, path) in enumerate(batches):
                twins = con.execute("SELECT row_key, keeper, keeper_batch FROM duplicate "
                                    "WHERE rank = ?", [rank]).df().set_index("row_key")
                for chunk in io.read_parquet_tables(path, chunk_rows,
                                                    dictionary=contract.categorical):
                    rows, _ = _labelled_table(chunk, labels)
                    content = contents.take(rows.num_rows)
                    rows = rows.append_column(CONTENT, pa.array(content, pa.uint64()))
                    is_dup = np.zeros(rows.num_rows, dtype=bool)
                    if len(twins):
                        is_dup = pc.is_in(rows[ROW_KEY], value_set=pa.array(
                            twins.index.to_numpy(object), pa.string())).to_numpy(
                                zero_copy_only=False)
                    if is_dup.any():
                        dup = rows.filter(is_dup).cast(layout).to_pandas()
                        twin = twins.loc[dup[ROW_KEY]]
                        dup["reason"] = ("duplicate of row " + twin["keeper"] + " (batch "
                                         + twin["keeper_batch"] + ")").to_numpy()
                        duplicates.append(dup)
                    kept, content = rows.filter(~is_dup), content[~is_dup]
                    where = np.where(_contains(sealed, content), test,
                                     _split_codes(content, contract.split_fractions))
                    for code, name in enumerate(SPLITS):
                        part = kept.filter(where == code)
                        writers[name].write(part)
                        positives[name] += int(pc.sum(part[TARGET]).as_py() or 0)
            contents.finish()
        finally:
            contents.close()
            for writer in writers.values():
                writer.close()
    finally:
        con.close()
    no_duplicates = layout.empty_table().to_pandas().assign(reason=pd.Series(dtype=object))
    return SplitFiles({n: w.path for n, w in writers.items()},
                      {n: w.rows for n, w in writers.items()}, positives,
                      pd.concat(duplicates, ignore_index=True) if duplicates else no_duplicates,
                      unlabeled, Manifest(total=total, added=added))


def _layout(first: pa.Table) -> pa.Schema:
    """The split files' schema, from the first chunk read: the batches' columns (category
    columns as text, as stored) and the content hash, with pandas' metadata (the nullable
    label and all) as pandas writes it for those rows."""
    plain = pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type)
                       else f for f in first.schema], metadata=first.schema.metadata)
    head = first.slice(0, 1000).cast(plain).to_pandas()
    head[CONTENT] = np.zeros(len(head), dtype=np.uint64)
    out = pa.Schema.from_pandas(head, preserve_index=False)
    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                      for f in out], metadata=out.metadata)


def _labelled_table(rows: pa.Table, by_key: pd.Series | None) -> tuple[pa.Table, int]:
    """``apply_labels`` on an Arrow table (the rows as read, with ``_label_map``'s labels):
    the labelled rows, not copied when all are, and how many wait."""
    if by_key is not None and KEY in rows.column_names:
        target = rows[TARGET].to_pandas()
        filled = target.fillna(rows[KEY].to_pandas().map(by_key).astype("Int8"))
        rows = rows.set_column(rows.column_names.index(TARGET), TARGET,
                               pa.array(filled, rows.schema.field(TARGET).type,
                                        from_pandas=True))
    labelled = pc.is_valid(rows[TARGET])
    waiting = rows.num_rows - int(pc.sum(labelled).as_py() or 0)
    return (rows if not waiting else rows.filter(labelled)), waiting


def _content_of(rows: pa.Table, contract: DatasetContract) -> np.ndarray:
    """``content_keys`` of an Arrow table's rows (only the hashed columns go to pandas)."""
    columns = [*contract.features, TARGET]
    return content_keys(rows.select(columns).to_pandas(), contract).to_numpy(np.uint64)


def _split_names(codes: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()),
                                          pa.array(SPLITS)).cast(pa.string())


def new_contents(batches: list[Path], built: list[Path], contract: DatasetContract,
                 chunk_rows: int = io.CHUNK_ROWS) -> int:
    """How many labelled rows of the validated ``batches`` (in order) hold a content that is
    in none of the ``built`` split files (their ``CONTENT`` column) nor in an earlier row of
    the batches: the rows that would add something to training."""
    known = np.concatenate([np.zeros(0, np.uint64), *(
        chunk[CONTENT].to_numpy(np.uint64) for path in built
        for chunk in io.read_parquet_chunks(path, chunk_rows, [CONTENT]))])
    seen = np.unique(known)
    count = 0
    for path in batches:
        for chunk in io.read_parquet_tables(path, chunk_rows, dictionary=contract.categorical):
            rows, _ = _labelled_table(chunk, None)
            fresh = np.unique(_content_of(rows, contract))
            fresh = fresh[~_contains(seen, fresh)]
            count += len(fresh)
            seen = np.union1d(seen, fresh)
    return count


class _Column:
    """A column of a Parquet file handed out in the file's order, ``n`` values at a time
    (at most ``rows`` read at once)."""

    def __init__(self, path: Path, column: str, rows: int):
        self._file = pq.ParquetFile(path)
        self._batches = self._file.iter_batches(batch_size=rows, columns=[column])
        self._held = np.zeros(0, dtype=np.uint64)

    def take(self, n: int) -> np.ndarray:
        parts, have = [self._held], len(self._held)
        while have < n:
            part = next(self._batches, None)
            if part is None:
                raise RuntimeError("the split's first pass hashed fewer rows than its "
                                   "second reads: the batches changed between its passes")
            part = part.column(0).to_numpy()
            parts.append(part)
            have += len(part)
        held = np.concatenate(parts)
        self._held = held[n:]
        return held[:n]

    def finish(self) -> None:
        """Every value was taken: the two passes saw the same rows."""
        left = len(self._held) + sum(b.num_rows for b in self._batches)
        if left:
            raise RuntimeError(f"{left} content hashes of the first pass were not used: the "
                               "batches changed between the split's two passes")

    def close(self) -> None:
        self._file.close()


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of ``values`` are in ``sorted_values`` (sorted, unique)."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def _load_sealed(con, manifest: Path) -> bool:
    """The sealed manifest as table ``sealed`` (content, row_key, batch, version, n: its
    order). A manifest written before rows were sealed by content has row keys only: each
    row key still in the data takes that row's content (``k``), and the manifest is then
    rewritten in today's layout. Returns whether that happened."""
    if not Path(manifest).is_file():
        con.execute("CREATE TABLE sealed (content UBIGINT, row_key VARCHAR, batch VARCHAR, "
                    "version VARCHAR, n BIGINT)")
        return False
    names = set(pq.read_schema(manifest).names)
    source = f"read_parquet({_sql(manifest)}, file_row_number = true)"
    if CONTENT in names:
        con.execute(f"""CREATE TABLE sealed AS SELECT "{CONTENT}" AS content,
                        "{ROW_KEY}" AS row_key, "{BATCH}" AS batch, "{VERSION}" AS version,
                        file_row_number AS n FROM {source}""")
        return False
    con.execute(f"""CREATE TABLE sealed AS
                    SELECT any_value(k.content) AS content, m."{ROW_KEY}" AS row_key,
                           m."{BATCH}" AS batch, NULL::VARCHAR AS version,
                           m.file_row_number AS n
                    FROM {source} m LEFT JOIN k ON k.row_key = m."{ROW_KEY}"
                    GROUP BY ALL""")
    return True


def _sql(path: Path) -> str:
    """A path as an SQL string literal (a home directory may have a quote in its name)."""
    return "'" + str(path).replace("'", "''") + "'"


def _label_map(labels: pd.DataFrame | None, contract: DatasetContract) -> pd.Series | None:
    if not contract.key_column or labels is None or not len(labels):
        return None
    return labels.drop_duplicates("request_id", keep="last").set_index("request_id")[TARGET]


def read_sealed(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        return _MANIFEST_SCHEMA.empty_table().to_pandas()
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
    """View ``sealed`` (content, row_key, batch) of the manifest, contents known only."""
    if Path(manifest).is_file() and CONTENT in pq.read_schema(manifest).names:
        con.execute(f"CREATE VIEW sealed AS SELECT \"{CONTENT}\" AS content, \"{ROW_KEY}\" "
                    f"AS row_key, \"{BATCH}\" AS batch FROM read_parquet({_sql(manifest)}) "
                    "WHERE content IS NOT NULL")
    elif Path(manifest).is_file():
        raise ValueError(f"sealed manifest {manifest} has no {CONTENT} column: it predates "
                         "sealing by content; build the dataset once (build_dataset) to "
                         "rewrite it")
    else:
        con.execute("CREATE VIEW sealed AS SELECT NULL::UBIGINT AS content, NULL::VARCHAR AS "
                    "row_key, NULL::VARCHAR AS batch WHERE false")


def audit(manifest: Path, *, train: Path, validation: Path, test: Path,
          memory_limit: str = "1GB") -> SplitAudit:
    """Prove the splits (Parquet files with row key, batch and content columns) share no
    content, that no sealed test content is outside test, and that every sealed content of a
    batch still in the data is still in test. Run in DuckDB over the files, under
    ``memory_limit``: at 41M rows the key sets alone took 8 GB in Python."""
    with _duckdb(memory_limit) as con:
        for name, path in (("train", train), ("validation", validation), ("test", test)):
            con.execute(f"CREATE VIEW {name} AS SELECT \"{ROW_KEY}\" AS row_key, \"{BATCH}\" "
                        f"AS batch, \"{CONTENT}\" AS content FROM read_parquet({_sql(path)})")
        _sealed_view(con, manifest)
        overlaps = {
            f"{a} & {b}": con.execute(f"SELECT count(*) FROM (SELECT content FROM {a} "
                                      f"INTERSECT SELECT content FROM {b})").fetchone()[0]
            for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]
        }
        con.execute("""
            CREATE TABLE elsewhere AS SELECT content, min(row_key) AS row_key FROM (
                SELECT content, row_key FROM train UNION ALL
                SELECT content, row_key FROM validation) GROUP BY content""")
        moved = con.execute("SELECT count(*) FROM sealed SEMI JOIN elsewhere USING (content)"
                            ).fetchone()[0]
        examples = [r[0] for r in con.execute(
            "SELECT e.row_key FROM elsewhere e SEMI JOIN sealed USING (content) "
            "ORDER BY e.row_key LIMIT 5").fetchall()]
        present = ("(SELECT DISTINCT batch FROM test UNION SELECT DISTINCT batch FROM train "
                   "UNION SELECT DISTINCT batch FROM validation)")
        con.execute(f"""
            CREATE TABLE gone AS SELECT s.* FROM sealed s SEMI JOIN {present} USING (batch)
            ANTI JOIN test USING (content) ANTI JOIN elsewhere USING (content)""")
        total = con.execute(f"SELECT count(*) FROM sealed SEMI JOIN {present} USING (batch)"
                            ).fetchone()[0]
        gone = con.execute("SELECT count(*) FROM gone").fetchone()[0]
        shrunk = [r[0] for r in con.execute("SELECT DISTINCT batch FROM gone ORDER BY batch"
                                            ).fetchall()]
    return SplitAudit(overlaps, moved, examples, total, gone, shrunk)


def leaked_test_rows(manifest: Path, stored: Path, memory_limit: str = "1GB"
                     ) -> tuple[int, int, list[str]]:
    """How many rows of the Parquet file ``stored`` there are, how many carry a sealed test
    content (must be none for any training input) and up to five of those row keys; in
    DuckDB."""
    with _duckdb(memory_limit) as con:
        _sealed_view(con, manifest)
        con.execute(f"CREATE VIEW rows AS SELECT \"{ROW_KEY}\" AS row_key, \"{CONTENT}\" AS "
                    f"content FROM read_parquet({_sql(stored)})")
        rows = con.execute("SELECT count(*) FROM rows").fetchone()[0]
        leaked = con.execute("SELECT count(*) FROM rows SEMI JOIN sealed USING (content)"
                             ).fetchone()[0]
        examples = [r[0] for r in con.execute(
            "SELECT row_key FROM rows SEMI JOIN sealed USING (content) ORDER BY row_key LIMIT 5"
        ).fetchall()]
    return rows, leaked, examples
