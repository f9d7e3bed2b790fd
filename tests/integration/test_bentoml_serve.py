"""The real `bentoml serve` from the repository root: readiness, prediction, hot swap of a
new champion under a concurrent client with zero failed requests, SIGTERM, and the log."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import PROJECT_ROOT
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.serving import predlog
from mlops_assets.lib.serving.scoring import to_bytes
from mlops_assets.platform.procs import free_port, server, stop
from tests.helpers import http_status, post, post_table
from tests.serving.conftest import BANK, records_from, train_two_models

pytestmark = pytest.mark.integration
RELOAD_SECONDS = 1.0


def test_bentoml_serve_hot_swaps_the_champion_without_failing_requests(tmp_path, bank_batches):
    home = tmp_path / "home"
    first, second, test_rows = train_two_models(home, bank_batches)
    registry = Registry(home)
    # Start with no champion at all: the server must say it is not ready.
    registry.set_alias("production", None, "clear", "test starts without a champion")
    port = free_port()
    bentoml = Path(sys.executable).parent / "bentoml"
    env = {"MLOPS_HOME": str(home), "MLOPS_RELOAD_SECONDS": str(RELOAD_SECONDS),
           "BENTOML_HOME": str(home / "bentoml"), "MLOPS_CANARY_SHARE": "0"}
    cmd = [str(bentoml), "serve", "--port", str(port)]
    records = records_from(test_rows, 1)
    with server(cmd, f"http://127.0.0.1:{port}/livez", tmp_path / "serve.log", env,
                PROJECT_ROOT, timeout=120) as proc:
        assert http_status(port, "/readyz") == 503
        assert post(port, records)[0] == 503
        registry.promote(first, "first champion")
        deadline = time.monotonic() + 30
        while http_status(port, "/readyz") != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http_status(port, "/readyz") == 200
        status, body = post(port, records)
        assert status == 200 and body[0]["model_version"] == first

        answers: list[tuple[float, int, dict | list]] = []
        stop_client = threading.Event()

        def client():
            while not stop_client.is_set():
                status, body = post(port, records)
                answers.append((time.monotonic(), status, body))

        worker = threading.Thread(target=client)
        worker.start()
        time.sleep(1.0)
        promoted_at = time.monotonic()
        registry.promote(second, "second champion")
        swapped_at = None
        while time.monotonic() - promoted_at < 15 and swapped_at is None:
            for t, status, body in list(answers):
                if status == 200 and body[0]["model_version"] == second:
                    swapped_at = t
                    break
            time.sleep(0.05)
        time.sleep(1.0)
        stop_client.set()
        worker.join(10)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        exit_code = stop(proc)  # SIGTERM by PID, as a graceful shutdown
    assert swapped_at is not None, "the new champion never answered"
    assert swapped_at - promoted_at <= RELOAD_SECONDS + 2.0
    failed = [(s, b) for _, s, b in answers if s != 200]
    assert not failed, failed[:3]
    versions = [b[0]["model_version"] for _, _, b in answers]
    assert versions[0] == first and versions[-1] == second
    assert exit_code == 0  # it stopped on SIGTERM, with no SIGKILL needed
    for version in (first, second):
        assert f'mlops_predictions_total{{model_version="{version}",variant="champion"}}' \
            in metrics
    logged = set(predlog.read(home / "predictions")["request_id"])
    answered = {b[0]["request_id"] for _, _, b in answers}
    assert answered <= logged and len(answered) > 20


def _through_bentoml_clients(port: int, records: list[dict], tables: dict[str, Path]):
    """Every endpoint through BentoML's own clients, sync and async, as a BentoML user
    calls them: what they list and what they answer."""
    import asyncio

    import bentoml

    url = f"http://127.0.0.1:{port}"
    with bentoml.SyncHTTPClient(url, timeout=60) as client:
        listed = sorted(client.endpoints)
        one = client.predict(records=records)
        answered = {fmt: pd.read_csv(client.predict_batch(path)) if fmt == "csv"
                    else pd.read_parquet(client.predict_batch(path))
                    for fmt, path in tables.items()}

    async def call_async():
        async with bentoml.AsyncHTTPClient(url, timeout=60) as client:
            return await asyncio.gather(*(client.predict(records=[r]) for r in records))

    concurrent = [answer[0] for answer in asyncio.run(call_async())]
    return listed, one, concurrent, answered


def test_a_built_bento_serves_its_own_model(tmp_path, bank_batches):
    from mlops_assets.lib.governance.bento import build_bento

    home = tmp_path / "home"
    first, second, test_rows = train_two_models(home, bank_batches)
    built = build_bento(home, first, Registry(home).load(first).contract)
    Registry(home).promote(second, "the registry moves on; the Bento must not")
    port = free_port()
    env = {"BENTOML_HOME": str(home / "bentoml"), "MLOPS_HOME": str(tmp_path / "serving"),
           "MLOPS_MAX_BATCH_ROWS": "400"}
    cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", built.tag, "--port",
           str(port)]
    sent = pd.DataFrame(records_from(test_rows, 400), columns=BANK.features)
    bad = sent.head(5).astype(object)
    bad.loc[2, "job"] = "astronaut"
    answers = {}
    tables = {"csv": tmp_path / "rows.csv", "parquet": tmp_path / "rows.parquet"}
    for fmt, path in tables.items():
        path.write_bytes(to_bytes(sent, fmt))
    with server(cmd, f"http://127.0.0.1:{port}/readyz", tmp_path / "bento.log", env, tmp_path,
                timeout=120):
        listed, one, concurrent, by_client = _through_bentoml_clients(
            port, records_from(test_rows, 5), tables)
        status, body = post(port, records_from(test_rows, 3))
        # The batch route of the same service: CSV and Parquet in, the same format out.
        for fmt, media in (("csv", "text/csv"), ("parquet", "application/vnd.apache.parquet")):
            answers[fmt] = post_table(port, to_bytes(sent, fmt), media)
        refused = post_table(port, to_bytes(bad, "csv"), "text/csv")
        too_many = post_table(port, to_bytes(pd.concat([sent, sent.head(1)]), "parquet"),
                              "application/vnd.apache.parquet")
    assert status == 200 and {b["model_version"] for b in body} == {first}
    expected = Registry(home).load(first).predict_records(sent.to_dict("records"))
    for fmt, (status, answer) in answers.items():
        assert status == 200, answer[:500]
        got = (pd.read_csv if fmt == "csv" else pd.read_parquet)(io.BytesIO(answer))
        np.testing.assert_allclose(got["probability"], expected, rtol=1e-12)
        assert set(got["model_version"]) == {first}
    assert refused[0] == 422
    problem, = json.loads(refused[1])["problems"]
    assert problem == {"row": 2, "column": "job", "value": "astronaut",
                       "reason": "job: unseen category 'astronaut'"}
    assert too_many[0] == 413 and b"401 rows is over the limit of 400" in too_many[1]
    # BentoML's clients: both endpoints listed, every answer the offline probability.
    assert listed == ["predict", "predict_batch"]
    offline = Registry(home).load(first).predict_records(records_from(test_rows, 5))
    for answered in (one, concurrent):
        assert [a["model_version"] for a in answered] == [first] * 5
        np.testing.assert_allclose([a["probability"] for a in answered], offline, rtol=1e-12)
    for fmt, got in by_client.items():
        np.testing.assert_allclose(got["probability"], expected, rtol=1e-12, err_msg=fmt)
    assert len(predlog.read(tmp_path / "serving" / "predictions")) == 3 + 2 * 400 + 10 + 800
