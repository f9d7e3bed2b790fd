"""Reading, cutting, parsing and validating batches of a dataset described by a contract."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.polars as pla
import polars as pl
import pyarrow as pa

from mlops_assets.config import (
    BATCH,
    DATA_DIR,
    FREQUENCIES,
    KEY,
    PERIOD,
    ROW_KEY,
    TARGET,
    DatasetContract,
    as_text,
)
from mlops_assets.lib import io
from mlops_assets.schemas import clean_schema, failure_reason

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
BATCH_SUFFIX = ".csv"


class BatchError(ValueError):
    """A landed batch cannot be read at all; the message names the file and the problem."""


# --- the bundled source, cut into batches -------------------------------------------------


def as_text_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A typed frame (Parquet) as the text a CSV file would hold: missing -> "", integers
    without ".0" (also in a float column that only holds missing values besides), dates in
    ISO format."""
    out = pd.DataFrame(index=df.index)
    for name, col in df.items():
        if pd.api.types.is_datetime64_any_dtype(col):
            text = col.dt.strftime("%Y-%m-%dT%H:%M:%S").str.replace("T00:00:00", "")
        elif pd.api.types.is_float_dtype(col):
            whole = col.dropna().apply(float.is_integer).all()
            text = col.map(lambda v, w=whole: "" if pd.isna(v)
                           else (str(int(v)) if w else str(float(v))))
        else:
            text = col.map(lambda v: "" if v is None or (not isinstance(v, str) and pd.isna(v))
                           else as_text(v) if not isinstance(v, str) else v)
        out[str(name)] = text.fillna("").astype(str)
    return out


def read_table(path: Path, contract: DatasetContract) -> pd.DataFrame:
    """One source file (delimited text by the contract, or Parquet by its suffix) as text."""
    if not path.is_file():
        raise FileNotFoundError(f"source file {path} of dataset {contract.name!r} not found")
    if path.suffix == ".parquet":
        return as_text_frame(pd.read_parquet(path))
    return pd.read_csv(
        path,
        sep=contract.source.separator,
        header=0 if contract.source.header else None,
        names=None if contract.source.header else contract.source.column_names,
        comment=contract.source.comment,
        dtype=str,
        keep_default_na=False,
        skipinitialspace=True,
    )


def read_source(contract: DatasetContract, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """The contract's source files as one frame of text, in file order."""
    frames = [read_table(path, contract) for path in contract.source_paths(data_dir)]
    return pd.concat(frames, ignore_index=True)


def period_keys(values: pd.Series, column: str, frequency: str | None) -> pd.Series:
    """A period column's values as sortable period keys: whole numbers zero-padded (years
    stay as they are), dates and datetimes grouped by ``frequency`` (default month) as
    ``2010``, ``2010Q1``, ``2010-03``, ``2010-03-01`` (week: its Monday, day)."""
    present = values[values != ""]
    if len(present) < len(values):
        row = int(np.flatnonzero((values == "").to_numpy())[0])
        raise ValueError(f"period column {column!r}: row {row} has no value")
    numbers = pd.to_numeric(values, errors="coerce")
    if frequency is None and numbers.notna().all():
        if not (numbers % 1 == 0).all():
            bad = values[numbers % 1 != 0].iloc[0]
            raise ValueError(f"period column {column!r}: {bad!r} is not a whole number; give "
                             "period.frequency if it is a date")
        width = len(str(int(numbers.abs().max())))
        return numbers.astype("int64").map(lambda v: str(v).zfill(width))
    dates = pd.to_datetime(values, errors="coerce", format="mixed")
    if dates.isna().any():
        bad = values[dates.isna()].iloc[0]
        raise ValueError(f"period column {column!r}: {bad!r} is neither a whole number nor a "
                         "date")
    freq = frequency or "month"
    if freq == "week":
        return dates.dt.to_period("W").dt.start_time.dt.strftime("%Y-%m-%d")
    fmt = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}.get(freq)
    if fmt:
        return dates.dt.strftime(fmt)
    return dates.dt.to_period(FREQUENCIES[freq]).astype(str)  # quarter: 2010Q1


def assign_periods(df: pd.DataFrame, contract: DatasetContract) -> pd.Series:
    """The period (batch id) of each row of the source, e.g. ``2008-05``, ``1994`` or
    ``b0003``."""
    spec = contract.period
    if spec.kind == "column":
        if spec.column not in df.columns:
            raise ValueError(f"period column {spec.column!r} is not in the source "
                             f"(columns: {list(df.columns)[:20]})")
        return period_keys(df[spec.column], spec.column, spec.frequency)
    if spec.kind == "row_chunks":
        chunk = np.arange(len(df)) // spec.rows_per_batch
        return pd.Series([f"b{i + 1:04d}" for i in chunk], index=df.index)
    months = df[spec.month_column].str.lower().map({m: i + 1 for i, m in enumerate(MONTHS)})
    if months.isna().any():
        bad = df.loc[months.isna(), spec.month_column].iloc[0]
        raise ValueError(f"column {spec.month_column!r}: {bad!r} is not a month abbreviation")
    # Rows are in date order: each time the month goes back, a new year starts.
    wraps = (months.diff() < 0).cumsum()
    years = spec.start_year + wraps
    return years.astype(str) + "-" + months.astype(int).map("{:02d}".format)


def source_batches(
    contract: DatasetContract, data_dir: Path = DATA_DIR
) -> dict[str, pd.DataFrame]:
    """The source cut into its batches, in time order: ``{batch_id: rows as text}``."""
    df = read_source(contract, data_dir)
    periods = assign_periods(df, contract)
    return {key: part.reset_index(drop=True) for key, part in df.groupby(periods, sort=True)}


def write_batch(df: pd.DataFrame, landing_dir: Path, batch_id: str, sep: str) -> Path:
    """Land one batch file by the landing protocol (see ``landed_files``): written under a
    temporary name, fsynced and renamed, so a watcher never sees half a file."""
    target = Path(landing_dir) / f"{batch_id}{BATCH_SUFFIX}"
    return io.write_with(target, lambda tmp: df.to_csv(tmp, sep=sep, index=False))


def land_batches(
    contract: DatasetContract,
    landing_dir: Path,
    first: int = 0,
    last: int | None = None,
    data_dir: Path = DATA_DIR,
) -> list[Path]:
    """Land batches ``first`` to ``last`` (exclusive, in time order) of the bundled source."""
    batches = list(source_batches(contract, data_dir).items())[first:last]
    return [write_batch(df, landing_dir, key, contract.source.separator) for key, df in batches]


def read_label_file(path: Path, contract: DatasetContract) -> pd.DataFrame:
    """One of the contract's separate label files: its key column and target, as text."""
    labels = read_table(path, contract)
    missing = {contract.key_column, contract.target.column} - set(labels.columns)
    if missing:
        raise ValueError(f"label file {path} misses column(s) {sorted(map(str, missing))}")
    return labels[[contract.key_column, contract.target.column]]


def land_labels(contract: DatasetContract, feedback_dir: Path,
                data_dir: Path = DATA_DIR) -> list[Path]:
    """Deliver the contract's separate label files (key column + target) to the feedback
    folder as CSV, atomically: the labels' own path into the pipeline (feedback_labels)."""
    out = []
    for path in contract.label_paths(data_dir):
        frame = read_label_file(path, contract)
        target = Path(feedback_dir) / f"labels-{path.name.split('.')[0]}.csv"
        out.append(io.write_with(target, lambda tmp, f=frame: f.to_csv(tmp, index=False)))
    return out


# --- one landed batch ---------------------------------------------------------------------
# Columnar (Polars): read, typed and validated with the contract's Pandera schemas on
# Pandera's Polars backend (schemas.py), a chunk at a time; what is stored has the types the
# rest of the pipeline reads with pandas (``row_schema``). tests/oracle_ingestion.py keeps
# the pandas path this replaced, and tests/unit/test_columnar.py holds the two to the same
# text, row keys, rows, types and reasons.


def read_batch(path: Path, contract: DatasetContract) -> pd.DataFrame:
    """A landed batch file as text, exactly as written. An empty file gives an empty frame."""
    frames = list(read_batch_frames(path, contract, 1 << 30))
    return pl.concat(frames, how="vertical").to_pandas() if frames[0].width else pd.DataFrame()


@contextmanager
def _naming_csv(path: Path, landed_as: Path | None = None):
    """Polars' errors reading the CSV file ``path`` as a BatchError naming it (as it was
    landed first, if ``path`` is the kept copy of ``landed_as``)."""
    try:
        yield
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as err:
        name = f"{landed_as} (kept as {path})" if landed_as else path
        raise BatchError(f"batch file {name} cannot be parsed as CSV: {err}") from err


_PRINTABLE = bytes(range(0x20, 0x7F)).replace(b'"', b"")  # ASCII, no controls, no quote


def may_hold_edge_space(path: Path, separator: str, block_size: int = 1 << 22) -> bool:
    """Whether a value of the delimited text file ``path`` may begin or end with whitespace.
    False only when none can: the file has no quote (so a line feed always ends a record),
    no byte outside ASCII (where Unicode's spaces are), no control character but line feeds
    and the separator, and no space beside a separator, a line feed or either end of the
    file. A quick look (0.4 s for 917 MB) that spares stripping every value of a clean file
    (2.3 s of CPU for its 7.8M rows x 20 columns)."""
    sep = separator.encode()
    plain = _PRINTABLE + b"\n" + sep  # the bytes a clean file holds
    edges = np.frombuffer(sep + b"\n", np.uint8)
    before = ord("\n")  # the byte before the block: the file's start counts as a line feed
    with open(path, "rb") as f:
        while block := f.read(block_size):
            if block.translate(None, plain):  # a byte that is not plain
                return True
            if before == 0x20 and block[0] in edges:  # the last block ended with a space
                return True
            if b" " in block:
                a = np.frombuffer(block, np.uint8)
                spaces = np.flatnonzero(a == 0x20)
                left = np.where(spaces > 0, a[spaces - 1], before)
                right = a[spaces[spaces < len(a) - 1] + 1]
                if np.isin(left, edges).any() or np.isin(right, edges).any():
                    return True
            before = block[-1]
    return before == 0x20  # a space at the file's end


def _text_scan(path: Path, contract: DatasetContract,
               landed_as: Path | None = None) -> pl.LazyFrame | None:
    """A landed batch file as a lazy frame of text (every value a string, missing as "",
    stripped of surrounding whitespace); None for a file of 0 bytes."""
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"batch file {path} does not exist")
    if path.stat().st_size == 0:
        return None
    sep = contract.source.separator
    with _naming_csv(path, landed_as):
        scan = pl.scan_csv(path, separator=sep, infer_schema=False,
                           raise_if_empty=False, encoding="utf8")
        names = scan.collect_schema().names()
    if not may_hold_edge_space(path, sep):
        return scan.select(pl.col(n).fill_null("") for n in names)
    return scan.select(pl.col(n).fill_null("").str.strip_chars() for n in names)


def read_batch_frames(path: Path, contract: DatasetContract, rows: int
                      ) -> Iterator[pl.DataFrame]:
    """A landed batch file as text (``_text_scan``), at most ``rows`` rows at a time: a file
    larger than memory is streamed. An empty file gives one frame with no columns; a header
    alone, one with no rows."""
    text = _text_scan(path, contract)
    if text is None:
        yield pl.DataFrame()
        return
    with _naming_csv(path):
        empty = True
        for frame in text.collect_batches(chunk_size=rows):
            if frame.height:
                empty = False
                yield frame
    if empty:  # a header and no rows
        yield pl.DataFrame(schema=text.collect_schema())


def store_batch_text(path: Path, contract: DatasetContract, target: Path,
                     landed_as: Path | None = None) -> None:
    """A landed batch file's text (``read_batch_frames``' rows, in order) written to the
    Parquet file ``target`` by Polars' streaming engine: out of core, on every core, without
    a Python step per chunk (the largest 1000x batch, 7.8M rows: 12.8 s of CPU by chunks,
    9.5 s streamed, half the memory). A file of 0 bytes gives a table with no columns.
    ``landed_as``: the landing file ``path`` is the kept copy of, which errors name first."""
    text = _text_scan(path, contract, landed_as)
    if text is None:
        pl.DataFrame().write_parquet(target)
        return
    with _naming_csv(path, landed_as):  # nothing reads text statistics; 4% of the time
        text.sink_parquet(target, statistics=False)


SEPARATORS = [",", ";", "\t", "|"]


def layout_problem(raw: pl.DataFrame, contract: DatasetContract, path: Path) -> str | None:
    """A problem with the file as a whole, said plainly (an empty file, a header and no rows,
    the wrong separator), or None; the schema then judges columns and values."""
    if raw.width == 0:
        return f"empty file: {path} has 0 bytes or no header line"
    sep = contract.source.separator
    if raw.width == 1 and len(contract.expected_columns) > 1:
        header = str(raw.columns[0])
        found = [s for s in SEPARATORS if s != sep and header.count(s) > 0]
        if found:
            best = max(found, key=header.count)
            return (f"wrong separator: {path} has one column {header[:80]!r}...; it looks "
                    f"separated by {best!r}, but contract {contract.name!r} says {sep!r}")
    if raw.height == 0:
        return f"no rows: {path} has a header line and nothing else"
    return None


def _hash_pii(value: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16]


def _tokens_parse_as_null(tokens: list[str]) -> bool:
    """Whether every missing-value token is no number (so a lenient cast makes it null)."""
    return bool(pl.Series(tokens, dtype=pl.String).cast(pl.Float64, strict=False)
                .is_null().all())


def parse_frame(text: pl.DataFrame, contract: DatasetContract, batch_id: str,
                start: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Type a text batch by the contract: missing tokens become null, numbers parse, the
    target becomes 0/1, leakage columns go, PII is hashed or dropped, and the pipeline's
    columns are added: a stable row key (the batch id and the row's position in its
    immutable file; ``start``: the position of ``text``'s first row), the batch, the period.
    Returns the typed rows and the values that did not parse (index, column, reason), which
    are recorded (not dropped) so that their rows can be quarantined."""
    missing = ["", *contract.missing_tokens]
    n = text.height
    target = contract.target.column
    labels = pl.col(target) if target in text.columns else pl.lit("", pl.String)
    # A missing token that is no number (Bank's "unknown", "") is null after a lenient cast
    # anyway: numbers are cast as they are (half the CPU of testing each value against the
    # tokens first), and only the values that came out null are looked at again.
    lenient = _tokens_parse_as_null(missing)

    def number(c: str) -> pl.Expr:
        value = pl.col(c) if lenient else \
            pl.when(pl.col(c).is_in(missing)).then(None).otherwise(pl.col(c))
        return value.cast(pl.Float64, strict=False).alias(c)

    columns = [
        pl.format(f"{batch_id}:{{}}", pl.int_range(start, start + n, dtype=pl.Int64)
                  .cast(pl.String).str.zfill(6)).alias(ROW_KEY),
        pl.lit(batch_id, pl.String).alias(BATCH),
        pl.lit(batch_id, pl.String).alias(PERIOD),
        *([pl.col(contract.key_column).alias(KEY)] if contract.key_column else []),
        labels.replace_strict(contract.label_codes, default=None, return_dtype=pl.Int8)
        .alias(TARGET),
        *(pl.when(pl.col(c).is_in(missing)).then(None).otherwise(pl.col(c)).alias(c)
          for c in contract.categorical),
        *(number(c) for c in contract.numeric),
        *(pl.col(c).map_elements(lambda v, salt=contract.name: _hash_pii(v, salt),
                                 return_dtype=pl.String).alias(c)
          for c, action in contract.pii_columns.items() if action == "hash"),
    ]
    rows = text.select(columns)
    # A missing label is not an error: the row waits, unlabeled, for a label file. A label
    # outside the contract is. A number that does not parse (NaN included) is. Only the
    # values that came out null (or NaN) are looked at: few, in a clean batch none.
    checks = [(TARGET, text[target], rows[TARGET], False,
               lambda v: f"{target}: unknown label {v!r}")] if target in text.columns else []
    checks += [(c, text[c], rows[c], True, lambda v, c=c: f"{c}: not a number {v!r}")
               for c in contract.numeric]
    errors = []
    for column, values, parsed, numeric, reason in checks:
        at = parsed.is_null()
        if numeric and parsed.is_nan().any():
            at = at | parsed.is_nan()
        if not at.any():
            continue
        at = at.arg_true()
        found = values.gather(at)
        bad = ~found.is_in(missing)
        errors += [(int(i), column, reason(v)) for i, v in
                   zip(at.filter(bad).to_list(), found.filter(bad).to_list(), strict=True)]
    return rows, pl.DataFrame(errors, schema={"index": pl.Int64, "column": pl.String,
                                              "reason": pl.String}, orient="row")


def check_frame(rows: pl.DataFrame, errors: pl.DataFrame, contract: DatasetContract
                ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split typed rows into valid rows and quarantined rows (with a ``reason`` column naming
    every problem of the row, column by column: values that did not parse first, then what
    the contract's clean schema refused). The reasons are put together column-wise, each
    distinct failure worded once: a batch whose every row fails (a category renamed at the
    source) costs about what a clean one does, not a Python step per failure."""
    schema = clean_schema(contract)
    found = errors.select(pl.col("index").cast(pl.Int64), pl.lit(0, pl.Int8).alias("kind"),
                          pl.int_range(pl.len(), dtype=pl.Int64).alias("sub"), "reason")
    try:
        schema.validate(rows, lazy=True)
    except pla.errors.SchemaErrors as err:
        cases = err.failure_cases
        table_level = cases.filter(pl.col("index").is_null())
        if table_level.height:
            raise BatchError(
                f"{schema.name} fails on the whole table: "
                f"{table_level.select('column', 'check').to_dicts()}") from err
        position = {c: i for i, c in enumerate(rows.columns)}
        cases = (
            cases.select(pl.col("index").cast(pl.Int64), pl.col("column").cast(pl.String),
                         pl.col("check").cast(pl.String),
                         pl.col("failure_case").cast(pl.String))
            # reasons of a row column by column, each column's in Pandera's order
            .with_columns(sub=pl.col("column").replace_strict(
                position, default=len(position), return_dtype=pl.Int64) * 1_000_000
                + pl.int_range(pl.len(), dtype=pl.Int64))
            # a value that did not parse is reported once, as such; any value once
            .join(errors.select(pl.col("index").cast(pl.Int64), "column"),
                  on=["index", "column"], how="anti", maintain_order="left")
            .unique(["index", "column"], keep="first", maintain_order=True))
        failures = cases.select("column", "check", "failure_case").unique(maintain_order=True)
        failures = failures.with_columns(pl.Series(
            "reason", [_case_reason(case, contract) for case in failures.iter_rows(named=True)],
            dtype=pl.String))
        cases = cases.join(failures, on=["column", "check", "failure_case"], how="left",
                           nulls_equal=True, maintain_order="left")
        found = pl.concat([found, cases.select("index", pl.lit(1, pl.Int8).alias("kind"),
                                               "sub", "reason")])
    if found.height == 0:  # a clean chunk, as it is (filtering copies every row)
        return rows, rows.clear().with_columns(pl.Series("reason", [], pl.String))
    why = (found.sort("index", "kind", "sub")
           .group_by("index", maintain_order=True).agg(pl.col("reason").str.join("; ")))
    bad = np.zeros(rows.height, dtype=bool)
    bad[why["index"].to_numpy()] = True
    mask = pl.Series(bad)
    quarantined = rows.filter(mask).with_columns(why["reason"].cast(pl.String))
    return rows.filter(~mask), quarantined


def _case_reason(case: dict, contract: DatasetContract) -> str:
    """A Pandera failure case in words (a number as the number it is)."""
    value = case["failure_case"]
    if case["column"] in contract.numeric and value not in (None, "null"):
        value = float(value)
    return failure_reason({**case, "failure_case": value})


def row_schema(contract: DatasetContract, quarantine: bool = False) -> pa.Schema:
    """The Arrow schema (with pandas' metadata) of stored valid (or quarantined) rows: text,
    float64 numbers, a nullable Int8 label; pandas reads them with today's types."""
    sample: dict = {ROW_KEY: ["x"], BATCH: ["x"], PERIOD: ["x"]}
    if contract.key_column:
        sample[KEY] = ["x"]
    sample[TARGET] = pd.array([1], dtype="Int8")
    sample.update({c: ["x"] for c in contract.categorical})
    sample.update({c: [1.0] for c in contract.numeric})
    sample.update({c: ["x"] for c, a in contract.pii_columns.items() if a == "hash"})
    if quarantine:
        sample["reason"] = ["x"]
    return pa.Schema.from_pandas(pd.DataFrame(sample), preserve_index=False)


def to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.to_arrow().cast(schema)


@dataclass(frozen=True)
class ParsedBatch:
    """A typed batch (pandas, for callers that hold rows in memory)."""

    rows: pd.DataFrame  # typed, every row of the batch, meta columns added
    cell_errors: pd.DataFrame  # index, column, reason: values that did not parse
    frame: pl.DataFrame | None = None
    errors: pl.DataFrame | None = None


def parse_batch(raw: pd.DataFrame, contract: DatasetContract, batch_id: str,
                start: int = 0) -> ParsedBatch:
    """``parse_frame`` for a pandas frame of text."""
    text = pl.from_pandas(raw.reset_index(drop=True).astype(str)) if raw.shape[1] \
        else pl.DataFrame()
    frame, errors = parse_frame(text, contract, batch_id, start)
    return ParsedBatch(to_arrow(frame, row_schema(contract)).to_pandas(), errors.to_pandas(),
                       frame, errors)


@dataclass(frozen=True)
class ValidatedBatch:
    valid: pd.DataFrame
    quarantined: pd.DataFrame  # the invalid rows with a `reason` column

    @property
    def invalid_fraction(self) -> float:
        total = len(self.valid) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


def validate_rows(parsed: ParsedBatch, contract: DatasetContract) -> ValidatedBatch:
    """``check_frame`` for a parsed batch, as pandas frames with the stored types."""
    valid, quarantined = check_frame(parsed.frame, parsed.errors, contract)
    return ValidatedBatch(to_arrow(valid, row_schema(contract)).to_pandas(),
                          to_arrow(quarantined, row_schema(contract, True)).to_pandas())


@dataclass(frozen=True)
class StoredValidation:
    """What validating a stored batch found (``validate_stored``): row counts, the rows
    quarantined per column (most first), and the row key and reason of the first
    quarantined rows (at least 100 of them, when there are)."""

    valid: int
    quarantined: int
    unlabeled: int
    reasons: pd.DataFrame
    first_quarantined: pd.DataFrame


PHASES = ("read", "parse", "check", "write")  # the parts of validate_stored, in order
# Chunks typed one at a time that Pandera then judges at once: its cost per call (about 40
# ms, some 90 small queries, whatever the rows) was two thirds of the check's CPU with a
# call per 200k rows. Three at a time: the check's CPU halved on the largest 1000x batch,
# for about 230 MB more held (the chunks' text is let go as each is typed).
CHECKED_TOGETHER = 3


def validate_stored(text: Path, contract: DatasetContract, batch_id: str, valid: Path,
                    quarantined: Path, rows: int = io.CHUNK_ROWS,
                    cpu: dict[str, float] | None = None) -> StoredValidation:
    """Type a stored text batch (``store_batch_text``) by the contract and check it, ``rows``
    rows read and typed at a time (``validate_frames``): a batch larger than memory."""
    return validate_frames(io.read_parquet_frames(text, rows), contract, batch_id, valid,
                           quarantined, cpu)


def validate_frames(frames: Iterator[pl.DataFrame], contract: DatasetContract, batch_id: str,
                    valid: Path, quarantined: Path, cpu: dict[str, float] | None = None
                    ) -> StoredValidation:
    """Type a batch's text, ``frames`` of it in order, by the contract and check it,
    ``CHECKED_TOGETHER`` frames at once: its valid rows to the Parquet file ``valid``, the
    others with their reasons to ``quarantined``. ``cpu``: if given, the CPU seconds (this
    process, every thread) of each of ``PHASES`` are added to it ("read": waiting for the
    next frame)."""
    import time

    start, unlabeled, reasons, first = 0, 0, [], []
    typed: list[pl.DataFrame] = []
    errors: list[pl.DataFrame] = []
    clock = dict.fromkeys(PHASES, 0.0)
    with io.ParquetWriter(valid, row_schema(contract), plain=[ROW_KEY]) as good_rows, \
            io.ParquetWriter(quarantined, row_schema(contract, quarantine=True),
                             plain=[ROW_KEY]) as bad_rows:

        def judge() -> None:
            """Check the typed chunks held, write their rows, let them go."""
            nonlocal unlabeled
            checked_at = time.process_time()
            good, bad = check_frame(pl.concat(typed, how="vertical", rechunk=False),
                                    pl.concat(errors, how="vertical"), contract)
            typed.clear()
            errors.clear()
            clock["check"] += (written_at := time.process_time()) - checked_at
            good_rows.write(good)
            bad_rows.write(bad)
            clock["write"] += time.process_time() - written_at
            unlabeled += good[TARGET].null_count()
            reasons.append(reasons_by_column(bad["reason"]).to_pandas())
            if sum(map(len, first)) <= 100:
                first.append(bad.select(ROW_KEY, "reason").head(101).to_pandas())

        held = 0  # rows typed and not yet checked
        while True:
            started = time.process_time()
            chunk = next(frames, None)
            clock["read"] += (parsed_at := time.process_time()) - started
            if chunk is None:
                break
            frame, found = parse_frame(chunk, contract, batch_id, start)
            typed.append(frame)
            errors.append(found.with_columns(pl.col("index") + held))
            clock["parse"] += time.process_time() - parsed_at
            start += chunk.height
            held += chunk.height
            del chunk
            if len(typed) == CHECKED_TOGETHER:
                judge()
                held = 0
        if typed:
            judge()
        started = time.process_time()
    clock["write"] += time.process_time() - started  # the files' footers
    if cpu is not None:
        for phase, seconds in clock.items():
            cpu[phase] = cpu.get(phase, 0.0) + seconds
    reasons = (pd.concat(reasons).groupby("column", sort=False)["rows"].sum()
               .sort_values(ascending=False, kind="stable").reset_index())
    return StoredValidation(good_rows.rows, bad_rows.rows, unlabeled, reasons,
                            pd.concat(first))


def reasons_by_column(reasons: pl.Series) -> pl.DataFrame:
    """How many quarantined rows each column caused (``reasons``: the quarantine's)."""
    return (reasons.str.split("; ").explode().str.split(":").list.first()
            .value_counts(sort=True, name="rows").rename({"reason": "column"}))


def _copy_open_file(source, out) -> None:
    """The rest of the open file ``source`` appended to the open file ``out``: by the kernel
    where it can (no pass through Python: the largest 1000x batch kept in 0.95 s of CPU,
    hash included, instead of 1.75), else a block at a time (a pipe, another file system)."""
    try:
        while os.copy_file_range(source.fileno(), out.fileno(), 1 << 30):
            pass
        return
    except OSError:  # not a file the kernel copies (EINVAL, EXDEV, ENOSYS...): by blocks,
        pass         # from where the kernel left off (both files' offsets moved together)
    while block := source.read(1 << 20):
        out.write(block)


def keep_batch(path: Path, backup_dir: Path, batch_id: str) -> tuple[str, Path]:
    """Keep an immutable (read-only) copy of a landed file, named by its content hash:
    ``(hash, copy)``. The open file is copied, then the copy, which nothing else writes, is
    hashed: the copy is the content its name says even if the file is landed again
    meanwhile (the landing protocol replaces a file by a rename; the open one keeps its
    content). Written once: a second landing of the same content reuses the copy, new
    content gets a new file. What a killed copy left is removed by the next
    (``io.private_file``)."""
    import mmap

    folder = Path(backup_dir) / batch_id
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(path).suffix
    digest = hashlib.sha256()
    fd, tmp = io.private_file(folder, "landing")
    try:
        with open(fd, "w+b") as out:
            try:
                source = open(path, "rb")  # noqa: SIM115 (closed by the with below)
            except OSError as err:
                raise BatchError(f"batch file {path} cannot be read: {err}") from err
            with source:
                _copy_open_file(source, out)
            out.flush()
            os.fsync(out.fileno())
            if os.fstat(out.fileno()).st_size:  # hashed where it lies, not read into Python
                with mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ) as copied:
                    digest.update(copied)
        target = folder / f"{digest.hexdigest()}{suffix}"
        if target.exists():
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            io.fsync_dir(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), target


def batch_profile(text: Path, contract: DatasetContract, batch_id: str) -> dict:
    """What the UI shows of a stored text batch (``store_batch_text``): its size, time range
    and the share of missing values per column, in one streamed pass over the file."""
    missing = ["", *contract.missing_tokens]
    scan = pl.scan_parquet(text)
    names = scan.collect_schema().names()
    rows = io.parquet_rows(text)
    nulls = {}
    if rows:
        counts = scan.select(pl.col(c).is_in(missing).sum() for c in names).collect().row(0)
        nulls = {c: round(int(n) / rows, 4) for c, n in zip(names, counts, strict=True)}
    return {"rows": rows, "columns": len(names), "period_start": batch_id,
            "period_end": batch_id, "null_fractions": nulls}


# --- what the landing directory holds that is not ingested yet ----------------------------


@dataclass(frozen=True)
class LandingPlan:
    to_ingest: dict[str, str]  # batch id -> content hash
    skipped: dict[str, str]  # file name -> why it is not ingested


def plan_ingestion(landed: dict[str, str], ingested: dict[str, str]) -> LandingPlan:
    """Decide which landed batches to ingest. ``landed`` and ``ingested`` map batch id to
    content hash. A batch is ingested once per content. A file is its own batch whatever it
    holds: the same content under another name is ingested too, and the sealed split sets
    its rows aside as duplicates of the batch ingested first (content, not file names,
    decides duplicates and sealing), so a batch whose copy was ingested can still come back."""
    to_ingest: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for batch, sha in sorted(landed.items()):
        if ingested.get(batch) == sha:
            skipped[batch] = "already ingested with this content"
        else:
            to_ingest[batch] = sha
    return LandingPlan(to_ingest, skipped)


def share_by_size(sizes: dict[str, int], parts: int, per_batch: int = 1) -> list[list[str]]:
    """The batches (id -> file size) shared among at most ``parts`` runs so that each run
    has about as much to do as the others: a batch costs its bytes plus ``per_batch`` (what
    a batch's run costs whatever its size, in bytes of work); the costliest first, each to
    the run with the least so far (longest processing time first: within 4/3 of the best
    possible split). Each run's batches are in id order; runs with none are left out.
    Shared by count instead, one run got 92% of a backfill's rows: Bank's first months
    hold most of them. Shared by bytes alone, small batches went 8 to one run and 4 to the
    other, each costing about the same."""
    loads: list[list] = [[0, i, []] for i in range(max(1, parts))]
    for batch in sorted(sizes, key=lambda b: (-sizes[b], b)):
        lightest = min(loads, key=lambda load: (load[0], load[1]))
        lightest[0] += max(0, sizes[batch]) + max(1, per_batch)
        lightest[2].append(batch)
    return sorted(sorted(load[2]) for load in loads if load[2])


def landed_files(landing_dir: Path) -> dict[str, Path]:
    """Batch files in the landing directory by batch id. The landing protocol: a writer
    writes ``<batch>.csv.part`` (or a name starting with ``.``) and renames it to
    ``<batch>.csv`` when complete, so a file is never seen half-written; those names are
    ignored here. Entries that are not files (a folder named ``x.csv``, a broken link) are
    listed too: ``incomplete_reason`` says why they are not ingested."""
    if not Path(landing_dir).is_dir():
        return {}
    return {
        p.name[: -len(BATCH_SUFFIX)]: p
        for p in sorted(Path(landing_dir).glob(f"*{BATCH_SUFFIX}"))
        if not p.name.startswith(".")
    }


def incomplete_reason(path: Path) -> str | None:
    """Why a landed entry is not ingested now, or None: not a regular file (a folder, a
    broken or dangling link, a device), unreadable, or a copy that skipped the protocol and
    is still running or died (every CSV writer ends its last line with a newline; a file
    whose last line is torn is not ingested until it is whole)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"skipped: {path.name} is a broken link (to {os.readlink(path)})"
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        return f"skipped: {path.name} is {kind}; land batches as files"
    try:
        size = path.stat().st_size
        if size == 0:
            return None  # judged by the schema check: "empty file"
        with open(path, "rb") as f:
            f.seek(-1, 2)
            last = f.read(1)
    except OSError as err:
        return f"skipped: {path.name} cannot be read ({err.strerror})"
    if last != b"\n":
        return (f"incomplete: the last line of {path.name} has no newline (a copy still "
                "running or cut short); write it as .part and rename it when complete")
    return None
