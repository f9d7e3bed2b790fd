"""POST /predict_batch through ``Service.to_asgi()``: CSV and Parquet tables in, the same
format out, validated by the ingestion's Pandera domains, each table logged as one Parquet
file that the monitoring reads like the JSON lines."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.monitoring import live
from mlops_assets.lib.serving import predlog
from tests.serving.conftest import BANK, TOKEN, records_from

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def table(served, n: int) -> pd.DataFrame:
    return pd.DataFrame(records_from(served["test_rows"], n), columns=BANK.features)


def encode(frame: pd.DataFrame, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    return out.getvalue()


def decode(body: bytes, fmt: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(body)) if fmt == "csv" else pd.read_parquet(io.BytesIO(body))


def post(client, body: bytes, fmt: str = "csv", headers=None):
    return client.post("/predict_batch", content=body,
                       headers={**AUTH, "Content-Type": MEDIA[fmt], **(headers or {})})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_table_is_scored_as_offline_and_logged_as_a_table(client, served, fmt):
    sent = table(served, 300)
    r = post(client, encode(sent, fmt), fmt)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(MEDIA[fmt])
    got = decode(r.content, fmt)
    assert list(got.columns) == ["request_id", "probability", "label", "model_version",
                                 "variant"]
    assert len(got) == 300 and got["request_id"].is_unique
    registry = Registry(served["home"])
    for version, rows in got.groupby("model_version"):
        model = registry.load(version)
        expected = model.predict_records(sent.loc[rows.index].to_dict("records"))
        np.testing.assert_allclose(rows["probability"], expected, rtol=1e-12)
        assert (rows["label"] == (rows["probability"] >= model.threshold)).all()
    # The table is one Parquet file in the log; the monitoring reads it as it reads the lines.
    logged = live.flatten(predlog.read(served["home"] / "predictions"))
    mine = logged.set_index("request_id").loc[got["request_id"]]
    np.testing.assert_allclose(mine["probability"], got["probability"], rtol=1e-12)
    pd.testing.assert_series_equal(mine["age"].reset_index(drop=True).astype(float),
                                   sent["age"].astype(float), check_names=False)
    assert (mine["job"].fillna("-").to_numpy() == sent["job"].fillna("-").to_numpy()).all()
    features = live.current_features(mine.reset_index(), BANK)
    assert len(features) == 300 and features["age"].notna().all()


def _with(served, column, value, row=3) -> pd.DataFrame:
    sent = table(served, 10).astype(object)
    sent[column] = sent[column].astype(object)
    sent.loc[row, column] = value
    return sent


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(
    "column, value, reason",
    [("age", "forty", "age: not a number"),
     ("age", 250, "age: out of range"),
     ("job", "astronaut", "job: unseen category 'astronaut'"),
     ("contact", None, "contact: missing required value")],
    ids=["wrong type", "out of range", "unseen category", "null in required"],
)
def test_bad_values_are_422_naming_row_column_value(client, served, fmt, column, value,
                                                     reason):
    sent = _with(served, column, value)
    if fmt == "parquet" and column == "age":  # a Parquet column has one type
        sent["age"] = sent["age"].astype(str) if value == "forty" else sent["age"].astype(float)
    r = post(client, encode(sent, fmt), fmt)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["problem_count"] == 1 and "nothing was scored" in body["error"]
    problem, = body["problems"]
    assert (problem["row"], problem["column"]) == (3, column)
    assert reason in problem["reason"]
    if value is not None:
        assert str(problem["value"]) in (str(value), f"{value}.0")


def test_bad_tables_are_4xx_never_5xx(client, served):
    good = table(served, 10)
    cases = {
        "unknown column": (encode(good.assign(colour="red"), "csv"), "csv", 422,
                           "unknown column(s) ['colour']"),
        "missing required column": (encode(good.drop(columns=["contact"]), "csv"), "csv",
                                    422, "missing required column(s) ['contact']"),
        "no rows": (encode(good.head(0), "csv"), "csv", 422, "no rows"),
        "ragged CSV": (encode(good, "csv") + b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,"
                       b"19,20,21,22\n", "csv", 400, "not a readable csv table"),
        "not Parquet": (b"PAR1 this is not a parquet file", "parquet", 400,
                        "not a readable parquet table"),
        "over the row limit": (encode(table(served, 501), "parquet"), "parquet", 413,
                               "501 rows is over the limit of 500"),
        "over the byte limit": (b"a" * 262145, "csv", 413, "over the limit of 262144 bytes"),
        "empty body": (b"", "csv", 400, "empty body"),
    }
    for name, (body, fmt, status, message) in cases.items():
        r = post(client, body, fmt)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert message in r.json()["error"], (name, r.text)
    r = client.post("/predict_batch", content=encode(good, "csv"),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 415 and "text/csv" in r.json()["error"]
    r = client.post("/predict_batch", content=encode(good, "csv"),
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 401
