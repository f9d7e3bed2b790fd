"""The BentoML service through ``Service.to_asgi()`` and Starlette's TestClient."""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import TARGET
from mlops_assets.lib import evaluation
from mlops_assets.lib.governance.registry import CANARY, SHADOW, Registry, RegistryError
from mlops_assets.lib.monitoring import live
from mlops_assets.lib.serving import predlog, scoring
from mlops_assets.lib.training import calibration, search
from tests.serving.conftest import BANK, TOKEN, records_from

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(client, body=None, headers=None, **kw):
    return client.post("/predict", json=body, headers={**AUTH, **(headers or {})}, **kw)


def test_ready_and_happy_path_matches_offline_predictions(client, served):
    assert client.get("/readyz").status_code == 200
    records = records_from(served["test_rows"], 20)
    r = post(client, {"records": records})
    assert r.status_code == 200, r.text
    answers = r.json()
    assert len(answers) == 20 and len({a["request_id"] for a in answers}) == 20
    model = Registry(served["home"]).load(served["champion"])
    expected = model.predict_records(
        [{k: (None if v == "unknown" else v) for k, v in rec.items()} for rec in records]
    )
    got = np.array([a["probability"] for a in answers])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert all(a["label"] == int(a["probability"] >= model.threshold) for a in answers)
    assert {a["model_version"] for a in answers} == {served["champion"]}
    assert {a["variant"] for a in answers} == {"champion"}


def test_single_record_path_equals_batch_path(client, served):
    records = records_from(served["test_rows"], 5)
    batch = [a["probability"] for a in post(client, {"records": records}).json()]
    single = [post(client, {"records": [r]}).json()[0]["probability"] for r in records]
    np.testing.assert_allclose(single, batch, rtol=1e-12)


@pytest.mark.parametrize(
    "mutate, loc, msg",
    [
        (lambda r: r.update(age="forty"), ["records", 0, "age"], "valid number"),
        (lambda r: r.update(age=250), ["records", 0, "age"], "less than or equal to 120"),
        (lambda r: r.update(job="astronaut"), ["records", 0, "job"], "Input should be"),
        (lambda r: r.update(colour="red"), ["records", 0, "colour"], "Extra inputs"),
        (lambda r: r.pop("contact"), ["records", 0, "contact"], "Field required"),
        (lambda r: r.update(contact=None), ["records", 0, "contact"], "Input should be"),
    ],
    ids=["wrong type", "out of range", "unseen category", "unknown field", "missing required",
         "null in required"],
)
def test_bad_fields_are_400_naming_the_field(client, served, mutate, loc, msg):
    record = records_from(served["test_rows"], 1)[0]
    mutate(record)
    r = post(client, {"records": [record]})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail[0]["loc"] == loc and msg in detail[0]["msg"]


def test_nan_and_infinity_are_refused(client, served):
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"records": [{"age": ' + literal + b"}]}"
        r = client.post("/predict", content=body,
                        headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 400
        ages = [d for d in r.json()["detail"] if d["loc"] == ["records", 0, "age"]]
        assert ages and "finite number" in ages[0]["msg"]


def test_missing_token_means_missing(client, served):
    record = records_from(served["test_rows"], 1)[0]
    as_null = post(client, {"records": [{**record, "job": None}]}).json()[0]["probability"]
    as_token = post(client, {"records": [{**record, "job": "unknown"}]}).json()[0]
    assert as_token["probability"] == as_null


def test_client_errors_are_4xx_with_a_message(client, served):
    record = records_from(served["test_rows"], 1)[0]
    cases = [
        (dict(content=b'{"records": [', headers={"Content-Type": "application/json"}), 400,
         "Invalid JSON"),
        (dict(content=b"", headers={"Content-Type": "application/json"}), 400, "empty body"),
        (dict(content=b"age=3", headers={"Content-Type": "text/plain"}), 415,
         "content type 'text/plain' is not supported"),
        (dict(content=b"--xx\r\nbroken", headers={
            "Content-Type": "multipart/form-data; boundary=xx"}), 415,
         "'multipart/form-data' is not supported"),
        (dict(content=b'{"records": []}', headers={"Content-Type": "application/json"}), 400,
         "at least 1 item"),
        (dict(json={"records": [record] * 51}), 400, "at most 50 items"),
        (dict(json=[record]), 400, "Input should be an object"),
    ]
    for kwargs, status, message in cases:
        kwargs["headers"] = {**AUTH, **kwargs.get("headers", {})}
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert message in r.text, (kwargs, r.text)


def test_body_over_the_limit_is_413_without_being_read(client):
    big = b'{"records": [' + b" " * 70_000 + b"]}"
    r = client.post("/predict", content=big,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit of 65536 bytes" in r.text

    def chunks():  # no content-length: the guard stops counting at the limit
        for _ in range(100):
            yield b" " * 8192

    r = client.post("/predict", content=chunks(),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_bearer_token_is_required(client, served):
    body = {"records": records_from(served["test_rows"], 1)}
    assert client.post("/predict", json=body).status_code == 401
    wrong = client.post("/predict", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "bearer token" in wrong.text
    assert post(client, body).status_code == 200


def test_canary_share_and_both_variants_logged(client, served):
    registry = Registry(served["home"])
    registry.set_alias(CANARY, served["other"], "canary", "test")
    try:
        record = records_from(served["test_rows"], 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the refresh thread to load the canary
            if any(post(client, {"records": record}).json()[0]["variant"] == "canary"
                   for _ in range(20)):
                break
        variants = [post(client, {"records": record}).json()[0] for _ in range(2000)]
    finally:
        registry.set_alias(CANARY, None, "canary", "test over")
    share = sum(v["variant"] == "canary" for v in variants) / len(variants)
    assert share == pytest.approx(0.25, abs=0.03)
    canary_versions = {v["model_version"] for v in variants if v["variant"] == "canary"}
    assert canary_versions == {served["other"]}
    log = predlog.read(served["home"] / "predictions")
    ids = {v["request_id"] for v in variants}
    logged = log[log["request_id"].isin(ids)]
    assert len(logged) == 2000
    assert set(logged["variant"]) == {"champion", "canary"}


def test_prediction_log_holds_every_answer_with_its_inputs(client, served):
    records = records_from(served["test_rows"], 7)
    answers = post(client, {"records": records}).json()
    log = predlog.read(served["home"] / "predictions").set_index("request_id")
    for record, answer in zip(records, answers, strict=True):
        row = log.loc[answer["request_id"]]
        assert row["probability"] == answer["probability"]
        assert row["label"] == answer["label"] and row["variant"] == answer["variant"]
        assert row["model_version"] == answer["model_version"] and row["latency_ms"] > 0
        assert row["inputs"]["age"] == record["age"]
        assert row["inputs"]["job"] == (None if record["job"] == "unknown" else record["job"])


def _logged_shadow(served, request_ids) -> pd.DataFrame:
    log = predlog.read(served["home"] / "predictions")
    return log[log["request_id"].isin(set(request_ids))].set_index("request_id")


def test_shadow_scores_are_logged_and_never_returned(client, served):
    registry = Registry(served["home"])
    records = records_from(served["test_rows"], 40)
    shadow = registry.load(served["other"])
    registry.set_alias(SHADOW, served["other"], "shadow", "test")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the refresh thread to load the shadow
            answers = post(client, {"records": records}).json()
            logged = _logged_shadow(served, [a["request_id"] for a in answers])
            if logged["shadow_version"].notna().all():
                break
            time.sleep(0.1)
        table = client.post("/predict_batch", content=scoring.to_bytes(
            pd.DataFrame(records, columns=BANK.features), "csv"),
            headers={**AUTH, "Content-Type": "text/csv"})
    finally:
        registry.set_alias(SHADOW, None, "shadow", "test over")
    # Answered by the champion (or the canary), never by the shadow; no shadow field shown.
    assert all(set(a) == {"request_id", "probability", "label", "model_version", "variant"}
               and a["model_version"] != served["other"] for a in answers)
    assert table.status_code == 200
    answered = pd.read_csv(io.BytesIO(table.content))
    assert list(answered.columns) == list(scoring.ANSWER_COLUMNS)
    expected = shadow.predict_records(records)
    for ids in ([a["request_id"] for a in answers], answered["request_id"]):
        logged = _logged_shadow(served, ids).loc[list(ids)]
        assert set(logged["shadow_version"]) == {served["other"]}
        np.testing.assert_allclose(logged["shadow_probability"].astype(float), expected,
                                   rtol=1e-12)
        assert (logged["shadow_label"].astype(int)
                == (expected >= shadow.threshold).astype(int)).all()
        agreement, = live.shadow_agreement(logged.reset_index()).to_dict("records")
        assert agreement["rows"] == 40 and agreement["shadow_version"] == served["other"]
        assert 0 < agreement["rank_correlation"] <= 1 and 0 <= agreement["label_flips"] < 1
    # Once cleared, requests carry no shadow score.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = post(client, {"records": records[:1]}).json()[0]
        if pd.isna(_logged_shadow(served, [answer["request_id"]])["shadow_version"].iloc[0]):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the shadow was still scoring 10 s after it was cleared")


def test_a_recalibrated_version_is_served_like_any_other(client, served):
    """A calibrator refit on a window where the base rate rose (label shift): the service
    answers with the recalibrated probabilities, same ranking, lower log loss there."""
    registry = Registry(served["home"])
    base = registry.load(served["champion"])
    rows = served["test_rows"]
    y_all = rows[TARGET].to_numpy(int)
    rng = np.random.default_rng(0)  # keep every positive, a quarter of the negatives
    keep = (y_all == 1) | (rng.random(len(y_all)) < 0.25)
    shifted, y = rows[keep], y_all[keep]
    half = len(shifted) // 2
    records = records_from(shifted, len(shifted))
    raw = base.predict_records([{k: (None if v == "unknown" else v) for k, v in r.items()}
                                for r in records])
    cal = calibration.fit(raw[:half], y[:half], fitted_on="shifted test window")
    threshold = search.choose_threshold(y[:half], cal.apply(raw[:half]), "cost:5")
    tag = registry.save_recalibrated(served["champion"], cal, threshold, {"why": "test"})
    assert registry.get(tag).info.metadata["recalibrated_from"] == served["champion"]
    with pytest.raises(RegistryError, match="already recalibrated"):
        registry.save_recalibrated(tag, cal, threshold, {})
    registry.promote(tag, "test: recalibrated")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answers = [a for i in range(half, len(records), 50)
                       for a in post(client, {"records": records[i:i + 50]}).json()]
            if {a["model_version"] for a in answers} == {tag}:
                break
            time.sleep(0.1)
    finally:
        registry.promote(served["champion"], "test over")
    assert {a["model_version"] for a in answers} == {tag}
    served_p = np.array([a["probability"] for a in answers])
    np.testing.assert_allclose(served_p, cal.apply(raw[half:]), rtol=1e-12)
    assert [a["label"] for a in answers] == [int(p >= threshold) for p in served_p]
    assert (np.argsort(served_p, kind="stable") == np.argsort(raw[half:], kind="stable")).all()
    before = evaluation.metrics(y[half:], raw[half:], base.threshold)["log_loss"]
    after = evaluation.metrics(y[half:], served_p, threshold)["log_loss"]
    assert after < before
    deadline = time.monotonic() + 10  # the other tests expect the champion back
    while time.monotonic() < deadline and post(client, {"records": records[:1]}).json()[0][
            "model_version"] != served["champion"]:
        time.sleep(0.1)
