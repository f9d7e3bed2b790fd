"""The one feature function: the single-record path, a request's lists of values and a
validated Polars table all give the vectorized path's matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from mlops_assets.config import load_contract
from mlops_assets.lib.dataset import data, features

BANK = load_contract("bank")


def test_single_record_path_equals_vectorized_path(bank_batches):
    raw = bank_batches["2008-11"].head(300)
    rows = data.validate_rows(data.parse_batch(raw, BANK, "2008-11"), BANK).valid
    matrix = features.encode({c: rows[c].to_numpy() for c in BANK.features}, BANK)
    for i in range(0, len(rows), 7):
        record = rows.iloc[i][BANK.features].to_dict()
        one = features.encode({k: [v] for k, v in record.items()}, BANK)
        np.testing.assert_array_equal(one[0], matrix[i])
    as_lists = {c: rows[c].astype(object).where(rows[c].notna(), None).tolist()
                for c in BANK.features}
    np.testing.assert_array_equal(features.encode(as_lists, BANK), matrix)
    as_polars = pl.DataFrame(as_lists, schema={
        **{c: pl.Utf8 for c in BANK.categorical}, **{c: pl.Float64 for c in BANK.numeric}})
    np.testing.assert_array_equal(
        features.encode({c: as_polars[c] for c in BANK.features}, BANK), matrix)


def test_sentinel_and_missing_become_nan_and_frame_round_trips(bank_batches):
    raw = bank_batches["2008-05"].head(500)
    rows = data.validate_rows(data.parse_batch(raw, BANK, "2008-05"), BANK).valid
    frame = features.build_features(rows, BANK)
    assert frame["pdays"].isna().sum() == (rows["pdays"] == 999).sum() > 0
    assert frame["default"].isna().sum() == rows["default"].isna().sum() > 0
    assert list(frame["job"].cat.categories) == BANK.categorical["job"].categories
    matrix = features.to_matrix(frame, BANK)
    np.testing.assert_array_equal(features.to_matrix(features.to_frame(matrix, BANK), BANK),
                                  matrix)


def test_rows_read_as_categories_give_the_features_of_rows_read_as_text(bank_batches,
                                                                         tmp_path):
    """The feature steps read a split's text columns as pandas categories (in the file's
    own order, with values the contract does not know): the same features as from text,
    one row or many."""
    from mlops_assets.lib import io

    raw = bank_batches["2008-05"].head(2000)
    rows = data.validate_rows(data.parse_batch(raw, BANK, "2008-05"), BANK).valid
    rows.loc[rows.index[::9], "job"] = "astronaut"  # not a category of the contract
    rows.loc[rows.index[::4], "marital"] = None
    path = io.write_parquet(tmp_path / "rows.parquet", rows)
    for chunk_rows in (700, 1):
        text = [features.build_features(c, BANK) for c in io.read_parquet_chunks(path, 700)]
        read = list(io.read_parquet_chunks(path, chunk_rows, categories=BANK.categorical))
        assert str(read[0]["job"].dtype) == "category"
        as_categories = [features.build_features(c, BANK) for c in read[:3 if chunk_rows == 1
                                                                           else None]]
        expected = pd.concat(text, ignore_index=True).head(sum(map(len, as_categories)))
        pd.testing.assert_frame_equal(pd.concat(as_categories, ignore_index=True), expected)
    unknown = rows["job"].isna() | (rows["job"] == "astronaut")
    assert features.build_features(rows, BANK)["job"].isna().sum() == unknown.sum() > 222
