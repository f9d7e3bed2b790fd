"""Faults at the service, each against a real `bentoml serve` on 127.0.0.1: a damaged
registry under a running server, a server started with no loadable champion, a non-ASCII
Authorization header, a full disk under the prediction log, and a torn log line."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets import orchestration
from mlops_assets.config import load_contract
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.serving import predlog
from mlops_assets.lib.serving.predlog import PredictionLog
from mlops_assets.lib.serving.scoring import to_bytes
from mlops_assets.platform.procs import stop
from tests.helpers import bentoml_serve, get, post, post_table, tiny_models, wait_until
from tests.hostile_tables import campaign

pytestmark = pytest.mark.integration
BANK = load_contract("bank")
RECORD = {"job": "admin.", "marital": "married", "education": "high.school", "default": "no",
          "housing": "yes", "loan": "no", "contact": "cellular", "month": "may",
          "day_of_week": "mon", "poutcome": "nonexistent", "age": 35, "campaign": 1,
          "pdays": 999, "previous": 0, "emp.var.rate": -1.8, "cons.price.idx": 92.9,
          "cons.conf.idx": -46.2, "euribor3m": 1.3, "nr.employed": 5099}
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _version(port: int) -> str:
    code, body = post(port, [RECORD], AUTH)
    assert code == 200, body
    return body[0]["model_version"]


def test_a_damaged_registry_never_takes_a_running_server_down(tmp_path):
    home = tmp_path / "home"
    a, b = tiny_models(home, BANK, 2)
    registry = Registry(home)
    registry.promote(a, "first")
    registry.promote(b, "second")
    with bentoml_serve(home, tmp_path / "serve.log", "/readyz",
                       MLOPS_API_TOKEN=TOKEN) as (port, proc):
        assert _version(port) == b
        # A truncated snapshot: the journal is the truth, nothing changes.
        text = registry.state_file.read_text()
        registry.state_file.write_text(text[: len(text) // 2])
        time.sleep(1.5)
        assert _version(port) == b and proc.poll() is None
        # A journal line that is JSON but no event: the server keeps the model it has.
        with open(registry.journal_file, "a") as f:
            f.write('["not", "an event"]\n')
        time.sleep(1.5)
        assert _version(port) == b and get(port, "/readyz")[0] == 200 and proc.poll() is None
        # Repaired, a rollback reaches the running server.
        lines = registry.journal_file.read_text().splitlines()[:-1]
        registry.journal_file.write_text("\n".join(lines) + "\n")
        assert registry.rollback(reason="bad release")["tag"] == a
        wait_until(lambda: _version(port) == a, 10, what="the rollback served")
        # A non-ASCII Authorization header is refused (it used to hang for the whole 30 s
        # traffic timeout: the client's own 10 s timeout would raise).
        code, body = post(port, [RECORD], {"Authorization": "Bearer tökén".encode()},
                          timeout=10)
        assert code == 401, body
        exit_code = stop(proc)
    assert exit_code == 0
    served_log = (tmp_path / "serve.log").read_text()
    assert "JSONDecodeError" not in served_log
    assert "aliases.journal.jsonl line 3: not an alias move" in served_log


def test_no_loadable_champion_gives_503_with_the_reason_then_recovers(tmp_path):
    home = tmp_path / "home"
    a, b = tiny_models(home, BANK, 2)
    registry = Registry(home)
    registry.promote(a, "first")
    shutil.rmtree(registry.get(a).path)  # the model directory is gone
    registry.state_file.write_text("{")  # and the snapshot is damaged too
    with bentoml_serve(home, tmp_path / "serve.log", "/livez",
                       MLOPS_API_TOKEN=TOKEN) as (port, proc):
        code, body = get(port, "/readyz")
        assert code == 503 and f"cannot load production {a}" in body, body
        code, answer = post(port, [RECORD], AUTH, timeout=10)  # answered, not waited out
        assert code == 503 and f"cannot load production {a}" in answer["error"], answer
        registry.promote(b, "a loadable champion")
        wait_until(lambda: get(port, "/readyz")[0] == 200, 10, what="ready")
        assert _version(port) == b and proc.poll() is None


@pytest.fixture
def small_disk(tmp_path):
    """The prediction log folder on a 256 KiB tmpfs (root only), unmounted afterwards."""
    folder = tmp_path / "home" / "predictions"
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_answers_507_and_leaves_no_half_line(tmp_path, small_disk):
    home = tmp_path / "home"
    (a,) = tiny_models(home, BANK, 1)
    Registry(home).promote(a, "champion")
    filler = small_disk / "filler"
    with bentoml_serve(home, tmp_path / "serve.log", "/readyz") as (port, proc):
        answered, refused = [], []
        with open(filler, "wb") as f:  # leave only a little room
            try:
                f.write(b"\0" * (256 * 1024))
            except OSError:
                pass
        filler_size = filler.stat().st_size
        filler.write_bytes(b"\0" * (filler_size - 6000))
        for _ in range(60):
            code, body = post(port, [RECORD] * 5)
            (answered if code == 200 else refused).append((code, body))
            if refused:
                break
        assert refused, "the disk never filled"
        code, body = refused[0]
        assert code == 507 and "ENOSPC" in body["error"] and "predictions" in body["error"]
        # A table on the full disk: refused alike, no Parquet file, no temporary left behind.
        table = to_bytes(pd.DataFrame([RECORD] * 200), "parquet")
        code, raw = post_table(port, table, "application/vnd.apache.parquet")
        assert code == 507 and b"ENOSPC" in raw, raw
        assert not [p for p in small_disk.rglob("*") if p.suffix in (".parquet", ".tmp")]
        filler.unlink()  # space again: the service carries on
        assert post(port, [RECORD])[0] == 200 and proc.poll() is None
        assert post_table(port, table, "application/vnd.apache.parquet")[0] == 200
    rows, torn = predlog.read_log(small_disk)
    assert torn.empty  # nothing half-written
    logged = set(rows["request_id"])
    assert {r["request_id"] for _, body in answered for r in body} <= logged
    assert len(rows) == 5 * len(answered) + 1 + 200


def test_a_torn_log_line_is_set_aside_with_file_and_line(project):
    log = PredictionLog(project.home / "predictions")
    row = {"ts": time.time(), "request_id": "r1", "model_version": "m:1", "variant": "champion",
           "inputs": {"age": 30}, "probability": 0.2, "label": 0, "latency_ms": 1.0}
    log.write([row, {**row, "request_id": "r2"}])
    log.close()
    day = next(Path(project.home / "predictions").glob("date=*")).name.split("=")[1]
    path = next(Path(project.home / "predictions").glob("date=*/*.jsonl"))
    with open(path, "a") as f:
        f.write(json.dumps({**row, "request_id": "r3"})[:40])  # a worker killed mid-write
    project.instance.add_dynamic_partitions("prediction_days", [day])
    result = orchestration.run_job(project.defs, project.instance, "ingest_prediction_log",
                                   partition_key=day, quiet=True)
    assert result.success
    rows = result.output_for_node("prediction_log")
    assert list(rows["request_id"]) == ["r1", "r2"]
    meta = result.asset_materializations_for_node("prediction_log")[0].metadata
    assert meta["torn_lines"].value == 1
    assert f"| {path} |      3 | not JSON" in meta["torn_lines_detail"].value


def test_hostile_tables_get_a_4xx_naming_row_column_and_value_never_a_5xx(tmp_path):
    home = tmp_path / "home"
    (a,) = tiny_models(home, BANK, 1)
    Registry(home).promote(a, "champion")
    cases = list(campaign(BANK, RECORD))
    failures, answered = [], 0
    with bentoml_serve(home, tmp_path / "serve.log", "/readyz") as (port, proc):
        for name, body, media in cases:
            code, raw = post_table(port, body, media)
            if code >= 500:
                failures.append(f"{name}: {code} {raw[:200]!r}")
                continue
            if code == 200:
                answered += 1
                continue
            try:
                answer = json.loads(raw)
            except ValueError:
                failures.append(f"{name}: {code} with a body that is not JSON: {raw[:200]!r}")
                continue
            if not answer.get("error"):
                failures.append(f"{name}: {code} without an error message: {answer}")
            for problem in answer.get("problems", []):
                if not {"row", "column", "value", "reason"} <= set(problem):
                    failures.append(f"{name}: a problem without row/column/value: {problem}")
        assert proc.poll() is None
    assert not failures, f"{len(failures)} of {len(cases)} hostile tables:\n" + "\n".join(
        failures[:40])
    assert answered  # the campaign holds tables the service may score (an int8 age, say)
