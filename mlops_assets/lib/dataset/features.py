"""The one feature function, used unchanged by training and by the BentoML service.

``encode`` turns columns of validated values into the model's matrix: categorical values
become their code in the contract's fixed category order (missing -> NaN, which LightGBM
treats natively), numbers become floats and a contract ``sentinel`` (Bank's ``pdays == 999``,
"never contacted") becomes NaN. A single record takes a dict-lookup path with no pandas
(a pandas round trip costs ~40x more per row); larger inputs take a vectorized path. Both give
the same numbers, and a test holds them to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.config import DatasetContract


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def encode(columns: Mapping[str, Sequence[Any]], contract: DatasetContract) -> np.ndarray:
    """The model matrix (rows x ``contract.features``, float64) for columns of values."""
    names = contract.features
    if all(type(columns[name]).__module__.startswith("polars") for name in names):
        return _encode_polars(columns, contract)  # a validated table's columns
    n = len(columns[names[0]])
    if n == 1:
        return _encode_one({name: columns[name][0] for name in names}, contract)
    out = np.empty((n, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        values = columns[name]
        if isinstance(values, list):  # a request's records: a lookup per value is cheaper
            out[:, j] = _encode_values(values, name, contract)  # than pandas' set-up
            continue
        if name in contract.categorical:
            codes = pd.Categorical(values, categories=contract.categorical[name].categories).codes
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            col = pd.to_numeric(pd.Series(values, copy=False), errors="raise").to_numpy(float)
            sentinel = contract.numeric[name].sentinel
            out[:, j] = col if sentinel is None else np.where(col == sentinel, np.nan, col)
    return out


def _encode_values(values: list, name: str, contract: DatasetContract) -> list[float]:
    """``encode`` of one column of plain values, by ``_encode_one``'s rules."""
    nan = np.nan
    if name in contract.categorical:
        codes = contract.category_codes[name]
        return [nan if _is_missing(v) else codes.get(v, nan) for v in values]
    sentinel = contract.numeric[name].sentinel
    return [nan if _is_missing(v) or (x := float(v)) == sentinel else x for v in values]


def _encode_polars(columns: Mapping[str, Any], contract: DatasetContract) -> np.ndarray:
    """``encode`` of a validated table's Polars columns in one Polars query, without a
    Python object per value: the same codes as ``pd.Categorical`` (the category's position,
    NaN for missing or unknown) and the same sentinel rule (3 ms for 10,000 rows of Bank's
    19 features; 9 ms column by column)."""
    import polars as pl

    exprs = []
    for name in contract.features:
        if name in contract.categorical:
            kind = pl.Enum(contract.categorical[name].categories)
            exprs.append(pl.col(name).cast(pl.Utf8).cast(kind, strict=False).to_physical()
                         .cast(pl.Float64))
        else:
            number = pl.col(name).cast(pl.Float64)
            sentinel = contract.numeric[name].sentinel
            exprs.append(number if sentinel is None
                         else pl.when(number == sentinel).then(None).otherwise(number))
    frame = pl.DataFrame({name: columns[name] for name in contract.features})
    return frame.select(exprs).to_numpy(order="c").astype(np.float64, copy=False)


def _encode_one(record: Mapping[str, Any], contract: DatasetContract) -> np.ndarray:
    codes = contract.category_codes
    row = np.empty((1, len(contract.features)), dtype=np.float64)
    for j, name in enumerate(contract.features):
        value = record[name]
        if name in codes:
            row[0, j] = np.nan if _is_missing(value) else codes[name].get(value, np.nan)
        elif _is_missing(value):
            row[0, j] = np.nan
        else:
            x = float(value)
            row[0, j] = np.nan if x == contract.numeric[name].sentinel else x
    return row


def to_records(frame: pd.DataFrame, contract: DatasetContract) -> list[dict]:
    """Rows of a feature frame (``build_features``) as a client sends them to the service:
    categories as text, missing as None, and a sentinel that the features turned into NaN
    back to the sentinel where the contract allows no missing value."""
    columns = {}
    for name in contract.features:
        col = frame[name].astype(object)
        spec = contract.numeric.get(name)
        if spec is not None and spec.sentinel is not None and not spec.nullable:
            col = col.where(col.notna(), spec.sentinel)
        columns[name] = [None if v is None or (isinstance(v, float) and v != v) else v
                         for v in col]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(),
                                                                      strict=True)]


def to_frame(matrix: np.ndarray, contract: DatasetContract, index=None) -> pd.DataFrame:
    """The matrix as a readable frame: categories restored with the contract's dtype."""
    data = {}
    for j, name in enumerate(contract.features):
        col = matrix[:, j]
        if name in contract.categorical:
            codes = np.where(np.isnan(col), -1, col).astype(np.int16)
            cats = contract.categorical[name].categories
            data[name] = pd.Categorical.from_codes(codes, categories=cats)
        else:
            data[name] = col
    return pd.DataFrame(data, index=index)


def to_matrix(frame: pd.DataFrame, contract: DatasetContract) -> np.ndarray:
    """Back from the frame to the matrix (exact inverse of ``to_frame``)."""
    out = np.empty((len(frame), len(contract.features)), dtype=np.float64)
    for j, name in enumerate(contract.features):
        if name in contract.categorical:
            codes = frame[name].cat.codes.to_numpy()
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = frame[name].to_numpy(dtype=np.float64)
    return out


def build_features(rows: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """Validated rows -> the feature frame the model is trained and evaluated on (a text
    column may come as pandas categories: recoded to the contract's, not looked up a row
    at a time)."""
    matrix = encode({name: rows[name].array if isinstance(rows[name].dtype, pd.CategoricalDtype)
                     else rows[name].to_numpy() for name in contract.features}, contract)
    return to_frame(matrix, contract, index=rows.index)
