"""The batch route's columnar path (``scoring.load_table``: Arrow, Polars, Pandera's Polars
backend) against its pandas path (``scoring.validate``): the same accepted tables, the same
values and model matrix, the same 4xx bodies for every hostile table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_assets.config import load_contract
from mlops_assets.lib.dataset import data, features
from mlops_assets.lib.serving import scoring
from tests.faults.test_serving import RECORD
from tests.hostile_tables import campaign

BANK = load_contract("bank")
FMT = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet"}


@pytest.fixture(scope="module")
def rows(bank_batches) -> pd.DataFrame:
    """Real Bank rows as a client sends them: the features, missing as null or token."""
    parsed = data.parse_batch(bank_batches["2009-05"], BANK, "2009-05")
    valid = data.validate_rows(parsed, BANK).valid
    return valid[BANK.features].head(2000).reset_index(drop=True)


def _pandas_path(body: bytes, fmt: str, max_rows: int) -> pd.DataFrame:
    return scoring.validate(scoring.read_request_table(body, fmt, BANK), BANK, max_rows)


def _outcome(call):
    try:
        return "ok", call()
    except scoring.TableError as err:
        return err.status, err.body()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_valid_table_takes_the_columnar_path_with_the_same_matrix(rows, fmt):
    body = scoring.to_bytes(rows, fmt)
    fast = scoring._columnar(body, fmt, BANK, 10_000)
    assert fast is not None, "a valid table left the columnar path"
    assert fast.columns == BANK.features
    slow = _pandas_path(body, fmt, 10_000)
    expected = features.encode({n: slow[n].to_numpy() for n in BANK.features}, BANK)
    np.testing.assert_array_equal(scoring.matrix(fast, BANK), expected)
    # the one feature function, either way, on the rows training sees
    np.testing.assert_array_equal(expected, features.to_matrix(
        features.build_features(rows.assign(**{c: rows[c] for c in BANK.features}), BANK),
        BANK))


def test_every_hostile_table_is_judged_as_the_pandas_path_judges_it():
    judged = 0
    for name, body, media in list(campaign(BANK, RECORD))[::3]:  # ~210 of the 638
        fmt = FMT[media]
        fast = _outcome(lambda body=body, fmt=fmt: scoring.load_table(body, fmt, BANK, 100))
        slow = _outcome(lambda body=body, fmt=fmt: _pandas_path(body, fmt, 100))
        assert fast[0] == slow[0], (name, fast, slow)
        if fast[0] == "ok":
            m_fast = scoring.matrix(fast[1], BANK)
            m_slow = features.encode({n: slow[1][n].to_numpy() for n in BANK.features}, BANK)
            np.testing.assert_array_equal(m_fast, m_slow, err_msg=name)
        else:
            assert fast[1] == slow[1], name
        judged += 1
    assert judged > 200


@pytest.mark.parametrize("column, value", [("age", 250.0), ("job", "astronaut"),
                                           ("contact", None), ("age", float("inf"))])
def test_a_bad_cell_leaves_the_columnar_path_and_is_named(rows, column, value):
    bad = rows.head(10).astype(object)
    bad.loc[3, column] = value
    body = scoring.to_bytes(pa.Table.from_pandas(bad.infer_objects(), preserve_index=False),
                            "parquet")
    assert scoring._columnar(body, "parquet", BANK, 100) is None
    with pytest.raises(scoring.TableError) as err:
        scoring.load_table(body, "parquet", BANK, 100)
    assert err.value.status == 422
    assert [(p["row"], p["column"]) for p in err.value.problems] == [(3, column)]
