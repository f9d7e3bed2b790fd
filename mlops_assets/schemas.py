"""Pandera schemas, one per stage, generated from the dataset contract.

They are built from the contract (rather than written as ``DataFrameModel`` classes) so that a
new dataset needs a new YAML file and no code. ``raw_schema`` judges a landed batch as a whole
(columns present, types parseable, not empty); ``clean_schema`` judges each row (domains,
categories, required values) and its failures become the quarantine's reasons;
``feature_schema`` guards what the model is trained on and served with.
"""

from __future__ import annotations

import contextlib

import pandas as pd
import pandera.pandas as pa
import pandera.polars as pla
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.config import ValidationDepth, config_context

from mlops_assets.config import BATCH, KEY, PERIOD, ROW_KEY, TARGET, DatasetContract


def raw_schema(contract: DatasetContract) -> pla.DataFrameSchema:
    """A landed batch, all values still text (Pandera's Polars backend): every expected column
    present, numbers parse. A few bad values are a row-level problem for the quarantine;
    only when more than ``max_invalid_fraction`` of a column's present values fail to parse is
    the column's type wrong, and then every value that does not parse is reported."""
    missing = ["", *contract.missing_tokens]
    min_share = 1.0 - contract.max_invalid_fraction

    def numeric_type(data: PolarsData):
        col = pl.col(data.key)
        present = ~col.is_in(missing)
        parses = col.cast(pl.Float64, strict=False).is_not_null() | ~present
        # The share first, in one pass: a column of the right type passes as a whole (no
        # per-value output for Pandera to collect and reduce: on the largest 1000x batch,
        # 12% of this schema's CPU, 23% of its wall time, 0.2 GB of its peak), and only a
        # column of the wrong type is judged value by value, for its failure cases.
        right_type = data.lazyframe.select(
            (present.sum() == 0) | ((parses & present).sum() / present.sum() >= min_share)
        ).collect().item()
        return True if right_type else data.lazyframe.select(parses.alias(data.key))

    # Stored text holds no nulls (a missing field is ""): a null check per column could not
    # fail, and was a fifth of this schema's CPU (a streamed query per column).
    columns = {name: pla.Column(pl.String, required=True, nullable=True)
               for name in contract.expected_columns}
    for name in contract.numeric:
        columns[name] = pla.Column(pl.String, nullable=True, checks=pla.Check(
            numeric_type, name="numeric_type",
            error=f"not numeric (more than {contract.max_invalid_fraction:.0%} of values)"))
    return pla.DataFrameSchema(
        columns,
        checks=pla.Check(lambda data: data.lazyframe.select(pl.len() > 0), name="not_empty",
                         error="batch has no rows"),
        strict=False, name=f"{contract.name}_raw")


def clean_schema(contract: DatasetContract) -> pla.DataFrameSchema:
    """One typed, validated row (Pandera's Polars backend): domains, categories and required
    values from the contract, as ``request_schema`` holds requests to them."""
    # The row key is the batch and the row's position in its file (``parse_frame``): unique
    # by construction, so no uniqueness check (it could not fail, and took a quarter of the
    # schema's time on the largest 1000x batch).
    columns: dict[str, pla.Column] = {
        ROW_KEY: pla.Column(pl.String),
        BATCH: pla.Column(pl.String),
        PERIOD: pla.Column(pl.String),
        TARGET: pla.Column(pl.Int8, pla.Check.isin([0, 1]), nullable=True),  # not arrived yet
    }
    if contract.key_column:
        columns[KEY] = pla.Column(pl.String, nullable=False)
    columns.update(_feature_columns(contract, pla, pl.String, pl.Float64))
    return pla.DataFrameSchema(columns, strict=True, name=f"{contract.name}_clean")


def _feature_columns(contract: DatasetContract, backend=pa, text=object,
                     number="float64") -> dict:
    """The domains of the features, as ingestion (Pandera's Polars backend) and serving
    (its pandas backend) both enforce them: one definition, two backends."""
    columns: dict = {}
    for name, spec in contract.categorical.items():
        columns[name] = backend.Column(text, backend.Check.isin(spec.categories),
                                       nullable=spec.nullable)
    for name, spec in contract.numeric.items():
        columns[name] = backend.Column(number, backend.Check.in_range(spec.min, spec.max),
                                       nullable=spec.nullable)
    return columns


def request_schema(contract: DatasetContract) -> pa.DataFrameSchema:
    """A table sent to the batch route: the features only, with clean_schema's domains."""
    return pa.DataFrameSchema(_feature_columns(contract), strict=True,
                              name=f"{contract.name}_request")


def polars_request_schema(contract: DatasetContract) -> pla.DataFrameSchema:
    """``request_schema`` on Pandera's Polars backend: a typed table (categories as text,
    numbers as Float64) the batch route judges without pandas (lib/scoring.load_table)."""
    return pla.DataFrameSchema(_feature_columns(contract, pla, pl.Utf8, pl.Float64),
                               strict=True, name=f"{contract.name}_request")


def feature_schema(contract: DatasetContract) -> pa.DataFrameSchema:
    """What the model sees: categories with the contract's fixed order, numbers as float."""
    columns: dict[str, pa.Column] = {}
    for name, spec in contract.categorical.items():
        columns[name] = pa.Column(
            pd.CategoricalDtype(spec.categories, ordered=False), nullable=True
        )
    for name, spec in contract.numeric.items():
        columns[name] = pa.Column("float64", pa.Check.in_range(spec.min, spec.max), nullable=True)
    return pa.DataFrameSchema(columns, strict=True, ordered=True, name=f"{contract.name}_features")


def failure_cases(schema, df) -> pd.DataFrame:
    """All of Pandera's failure cases (lazy validation) as a small text table; empty if valid.
    A pandas or a Polars schema, with a frame of its kind. A Polars LazyFrame (a file too
    large to hold, say) is judged as a whole, its data checks included (Pandera checks only
    a LazyFrame's schema by default), each check a streamed query over the columns it needs,
    failure cases indexed by row of the whole frame."""
    return failure_sample(schema, df)[0]


def failure_sample(schema, df, per_check: int | None = None) -> tuple[pd.DataFrame, int]:
    """``failure_cases`` with at most ``per_check`` cases of each (column, check) pair, every
    pair kept, and the count of all cases: a column of the wrong type in a large batch fails
    on every value (7.76M cases in the largest 1000x batch: as a table of Python strings 1.5
    GB and 3 s, for a count and the first rows)."""
    columns = ["column", "check", "failure_case", "index"]
    data = isinstance(df, pl.LazyFrame)
    try:
        with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA) if data \
                else contextlib.nullcontext():
            schema.validate(df, lazy=True)
    except (pa.errors.SchemaErrors, pla.errors.SchemaErrors) as err:
        cases, total = err.failure_cases, len(err.failure_cases)
        if isinstance(cases, pl.DataFrame):
            # Each (column, check) pair's cases by row (a streamed check's come in any
            # order), pairs in Pandera's order; of each pair the first rows, if a sample. A
            # pair is one number: grouping millions of cases by the two text columns took
            # 0.6 GB.
            pair = pl.col("column").hash(seed=0) ^ pl.col("check").hash(seed=1)
            if per_check is not None:
                cases = cases.filter(pl.col("index").is_null() | (
                    pl.col("index").rank("ordinal").over(pair) <= per_check))
            first = pl.int_range(pl.len()).min().over(pair)
            cases = cases.sort(first, pl.col("index"), nulls_last=False, maintain_order=True)
            # row numbers as pandas gives them: 3, or None
            index = cases["index"].to_list()
            cases = cases.drop("index").to_pandas()
            cases["index"] = pd.Series(index, dtype=object)
        elif per_check is not None:
            row = pd.to_numeric(cases["index"], errors="coerce")
            rank = row.groupby([cases["column"], cases["check"]], dropna=False).rank("first")
            cases = cases[row.isna() | (rank <= per_check)]
        return cases[columns].astype(str).reset_index(drop=True), total
    return pd.DataFrame(columns=columns), 0


def summarize_failures(failures: pd.DataFrame, limit: int = 10) -> str:
    """One line naming each failing (column, check) pair, for a check's description."""
    parts = [
        f"missing column {case!r}" if check == "column_in_dataframe" else f"{col}: {check}"
        for col, check, case in zip(
            failures["column"], failures["check"], failures["failure_case"], strict=True
        )
    ]
    pairs = list(dict.fromkeys(parts))
    text = "; ".join(pairs[:limit])
    return text + (f" (+{len(pairs) - limit} more)" if len(pairs) > limit else "")


def failure_reason(row: dict) -> str:
    """A Pandera failure case (a dict with column, check, failure_case) in words."""
    check = str(row["check"])
    value = row["failure_case"]
    if check.startswith("in_range"):
        return f"{row['column']}: out of range {check[len('in_range'):]} (value {value!r})"
    if check.startswith("isin"):
        return f"{row['column']}: unseen category {value!r}"
    if check == "not_nullable":
        return f"{row['column']}: missing required value"
    return f"{row['column']}: failed {check} (value {value!r})"
