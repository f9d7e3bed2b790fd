"""Pandera schemas, one per stage, generated from the dataset contract.

They are built from the contract (rather than written as ``DataFrameModel`` classes) so that a
new dataset needs a new YAML file and no code. ``raw_schema`` judges a landed batch as a whole
(columns present, types parseable, not empty); ``clean_schema`` judges each row (domains,
categories, required values) and its failures become the quarantine's reasons;
``feature_schema`` guards what the model is trained on and served with.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from mlops_assets.config import BATCH, KEY, PERIOD, ROW_KEY, TARGET, DatasetContract


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


def _feature_columns(contract: DatasetContract) -> dict[str, pa.Column]:
    """The domains of the features, as ingestion and serving both enforce them."""
    columns: dict[str, pa.Column] = {}
    for name, spec in contract.categorical.items():
        columns[name] = pa.Column(object, pa.Check.isin(spec.categories), nullable=spec.nullable)
    for name, spec in contract.numeric.items():
        columns[name] = pa.Column(
            "float64", pa.Check.in_range(spec.min, spec.max), nullable=spec.nullable
        )
    return columns


def request_schema(contract: DatasetContract) -> pa.DataFrameSchema:
    """A table sent to the batch route: the features only, with clean_schema's domains."""
    return pa.DataFrameSchema(_feature_columns(contract), strict=True,
                              name=f"{contract.name}_request")


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


def failure_cases(schema: pa.DataFrameSchema, df: pd.DataFrame) -> pd.DataFrame:
    """All of Pandera's failure cases (lazy validation) as a small text table; empty if valid."""
    columns = ["column", "check", "failure_case", "index"]
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        return err.failure_cases[columns].astype(str)
    return pd.DataFrame(columns=columns)


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
    if check == "field_uniqueness":
        return f"{row['column']}: duplicate key {value!r}"
    return f"{row['column']}: failed {check} (value {value!r})"
