"""Today's (before #27) ingestion path, pandas throughout, kept as the oracle the columnar path
is held to (tests/unit/test_columnar.py): same text, row keys, valid rows and types,
quarantined rows and reasons. Not used by the project."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlops_assets.config import BATCH, KEY, PERIOD, ROW_KEY, TARGET, DatasetContract
from mlops_assets.lib.dataset.data import BatchError, ValidatedBatch
from mlops_assets.schemas import _feature_columns, failure_reason


def read_batch_chunks(path: Path, contract: DatasetContract, rows: int) -> Iterator[pd.DataFrame]:
    """``read_batch`` ``rows`` at a time (a file larger than memory). An empty file gives one
    empty frame."""
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"batch file {path} does not exist")
    if path.stat().st_size == 0:
        yield pd.DataFrame()
        return
    try:
        with pd.read_csv(path, sep=contract.source.separator, dtype=str,
                         keep_default_na=False, skipinitialspace=True,
                         chunksize=rows) as reader:
            empty = True
            for chunk in reader:
                empty = False
                yield chunk.apply(lambda s: s.str.strip())
            if empty:  # a header and no rows
                yield pd.read_csv(path, sep=contract.source.separator, dtype=str,
                                  keep_default_na=False, skipinitialspace=True, nrows=0)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BatchError(f"batch file {path} cannot be parsed as CSV: {err}") from err


def row_keys(batch_id: str, n: int, start: int = 0) -> pd.Series:
    """Stable row keys: the batch id and the row's position in its immutable batch file."""
    return pd.Series([f"{batch_id}:{i:06d}" for i in range(start, start + n)], dtype=object)


def _hash_pii(values: pd.Series, salt: str) -> pd.Series:
    return values.map(lambda v: hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:16])


@dataclass(frozen=True)
class ParsedBatch:
    rows: pd.DataFrame  # typed, every row of the batch, meta columns added
    cell_errors: pd.DataFrame  # index, column, reason: values that did not parse


def parse_batch(raw: pd.DataFrame, contract: DatasetContract, batch_id: str,
                start: int = 0) -> ParsedBatch:
    """Type a text batch by the contract: missing tokens become NA, numbers parse, the target
    becomes 0/1, leakage columns go, PII is hashed or dropped, meta columns are added.
    ``start``: the position in the batch file of ``raw``'s first row (a chunk of it).

    Values that do not parse are recorded (not dropped) so the rows can be quarantined.
    """
    missing = {"", *contract.missing_tokens}
    text = raw.reset_index(drop=True)
    out = pd.DataFrame(index=text.index)
    errors: list[tuple[int, str, str]] = []
    out[ROW_KEY] = row_keys(batch_id, len(text), start)
    out[BATCH] = batch_id
    out[PERIOD] = batch_id
    if contract.key_column:
        out[KEY] = text[contract.key_column].astype(object)
    # A missing label is not an error: the row is kept, unlabeled (for drift and scoring),
    # until a label file supplies it. A label outside the contract is an error.
    labels = text[contract.target.column] if contract.target.column in text \
        else pd.Series("", index=text.index)
    target = labels.map(contract.label_codes).astype("Int8")
    for i in np.flatnonzero((target.isna() & ~labels.isin(missing)).to_numpy()):
        errors.append((int(i), TARGET,
                       f"{contract.target.column}: unknown label {labels.iat[i]!r}"))
    out[TARGET] = target
    for name in contract.categorical:
        out[name] = text[name].where(~text[name].isin(missing), None).astype(object)
    for name in contract.numeric:
        col = text[name].where(~text[name].isin(missing), None)
        parsed = pd.to_numeric(col, errors="coerce").astype("float64")
        for i in np.flatnonzero((parsed.isna() & col.notna()).to_numpy()):
            errors.append((int(i), name, f"{name}: not a number {col.iat[i]!r}"))
        out[name] = parsed
    for name, action in contract.pii_columns.items():
        if action == "hash":
            out[name] = _hash_pii(text[name], contract.name)
    return ParsedBatch(out, pd.DataFrame(errors, columns=["index", "column", "reason"]))


def validate_rows(parsed: ParsedBatch, contract: DatasetContract) -> ValidatedBatch:
    """Split a typed batch into valid rows and quarantined rows, each with every reason."""
    rows = parsed.rows
    schema = clean_schema(contract)
    reasons: dict[int, list[str]] = {}
    seen: set[tuple[int, str]] = set()
    for r in parsed.cell_errors.itertuples(index=False):
        seen.add((r.index, r.column))
        reasons.setdefault(r.index, []).append(r.reason)
    try:
        schema.validate(rows, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        table_level = cases[cases["index"].isna()]
        if len(table_level):
            raise BatchError(
                f"{schema.name} fails on the whole table: "
                f"{table_level[['column', 'check']].to_dict('records')}"
            ) from err
        for rec in cases.to_dict("records"):
            key = (int(rec["index"]), str(rec["column"]))
            if key in seen:  # a value that did not parse is reported once, as such
                continue
            seen.add(key)
            reasons.setdefault(key[0], []).append(failure_reason(rec))
    bad = np.zeros(len(rows), dtype=bool)
    bad[list(reasons)] = True
    quarantined = rows[bad].copy()
    quarantined["reason"] = ["; ".join(reasons[i]) for i in np.flatnonzero(bad)]
    return ValidatedBatch(rows[~bad].reset_index(drop=True), quarantined.reset_index(drop=True))


def _numeric_type(series: pd.Series, missing: set[str], min_share: float) -> pd.Series:
    """Per value: does it parse as a number? A few bad values are a row-level problem for the
    quarantine; only when too many fail is the column's type wrong, and then every value that
    does not parse is reported."""
    present = ~series.isin(missing) & (series != "")
    parses = pd.to_numeric(series.where(present), errors="coerce").notna() | ~present
    if not present.any() or parses[present].mean() >= min_share:
        return pd.Series(True, index=series.index)
    return parses


def raw_schema(contract: DatasetContract) -> pa.DataFrameSchema:
    """A landed batch, all values still text: every expected column present, numbers parse."""
    missing = set(contract.missing_tokens)
    min_share = 1.0 - contract.max_invalid_fraction
    columns = {
        name: pa.Column(str, required=True, nullable=False) for name in contract.expected_columns
    }
    for name in contract.numeric:
        columns[name] = pa.Column(
            str,
            nullable=False,
            checks=pa.Check(
                lambda s, m=missing, k=min_share: _numeric_type(s, m, k),
                name="numeric_type",
                error=f"not numeric (more than {contract.max_invalid_fraction:.0%} of values)",
            ),
        )
    return pa.DataFrameSchema(
        columns,
        checks=pa.Check(lambda df: len(df) > 0, name="not_empty", error="batch has no rows"),
        strict=False,
        name=f"{contract.name}_raw",
    )


def clean_schema(contract: DatasetContract) -> pa.DataFrameSchema:
    """One typed, validated row: domains, categories and required values from the contract."""
    columns: dict[str, pa.Column] = {
        ROW_KEY: pa.Column(str, unique=True),
        BATCH: pa.Column(str),
        PERIOD: pa.Column(str),
        TARGET: pa.Column("Int8", pa.Check.isin([0, 1]), nullable=True),  # not arrived yet
    }
    if contract.key_column:
        columns[KEY] = pa.Column(object, nullable=False)
    columns.update(_feature_columns(contract))
    return pa.DataFrameSchema(columns, strict=True, name=f"{contract.name}_clean")


