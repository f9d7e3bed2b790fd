"""Bring your own data, end to end, as a user would: `contract init` on a data file the
project has never seen, the demo from that contract given by path (a fresh CLI process,
runs launched through the instance and the daemon), and the packaged Bento served by a real
`bentoml serve` answering a request. Datasets: tests/byod/datasets.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops_assets.config import PROJECT_ROOT, load_contract
from mlops_assets.platform.procs import free_port, server
from tests.byod import datasets
from tests.helpers import post

CLI = str(Path(sys.executable).parent / "mlops-assets")


def _cli(*args: str, home: Path | None = None, timeout: float = 600, env: dict | None = None):
    cmd = [CLI, *(["--home", str(home)] if home else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=PROJECT_ROOT,
                          env={**os.environ, "PATH": "/usr/bin:/bin", **(env or {})})


def _demo_then_serve(tmp_path: Path, contract_path: Path, record: dict,
                     env: dict | None = None) -> dict:
    """The demo from the contract by path; then its Bento on a free port answers."""
    home = tmp_path / "home"
    demo = _cli("--contract", str(contract_path), "demo", "--trials", "2", home=home, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    serve_bento(demo.stdout, home, tmp_path, record)
    return {"stdout": demo.stdout, "home": home}


def serve_bento(demo_stdout: str, home: Path, tmp_path: Path, record: dict) -> None:
    """The Bento the demo printed, served on a free port, answers ``record`` and refuses the
    same record with its first field out of the contract's domain."""
    bento = demo_stdout.split("; Bento ")[1].split()[0]
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", bento, "--port", str(port)]
    env = {"BENTOML_HOME": str(home / "bentoml"), "MLOPS_HOME": str(tmp_path / "serving")}
    with server(cmd, f"http://127.0.0.1:{port}/readyz", tmp_path / "bento.log", env, tmp_path,
                timeout=120):
        status, body = post(port, [record])
        refused, why = post(port, [{**record, next(iter(record)): 999}])
    assert status == 200, body
    assert 0.0 <= body[0]["probability"] <= 1.0
    assert refused == 400 and next(iter(record)) in str(why)  # the contract's domain


def test_integer_coded_csv_with_a_date_period(tmp_path):
    data_file = datasets.integer_coded(tmp_path / "data")
    init = _cli("contract", "init", str(data_file), "--target", "churned",
                "--period", "signup_date")
    assert init.returncode == 0, init.stderr
    contract_path = tmp_path / "data" / "telco.yaml"
    assert "looks like an id" in init.stdout and "personal data" in init.stdout
    assert "'closing_fee': predicts the label almost alone" in init.stdout
    contract = load_contract(str(contract_path))
    assert contract.categorical["plan"].categories == ["1", "2", "3", "4", "5"]
    assert contract.pii_columns == {"email": "drop"}
    assert {"customer_id", "signup_date", "closing_fee"} <= set(contract.drop_columns)
    assert contract.source.files == [str(data_file)]  # relative in the file, to its folder
    assert yaml.safe_load(contract_path.read_text())["source"]["files"] == ["telco.csv"]
    # The demo from this contract, and its Bento answering integer-coded categories sent as
    # JSON numbers, run through the production profile (tests/integration/test_production.py
    # ::test_the_loop_runs_on_postgres_with_separate_services): one demo for both.


@pytest.mark.slow
def test_parquet_with_a_year_period_and_labels_apart(tmp_path):
    rows, labels = datasets.parquet_years(tmp_path / "data")
    init = _cli("contract", "init", str(rows), "--target", "label", "--period", "year",
                "--labels", str(labels), "--key", "id")
    assert init.returncode == 0, init.stderr
    contract = load_contract(str(tmp_path / "data" / "loans.yaml"))
    assert contract.key_column == "id" and contract.source.label_files == [str(labels)]
    assert contract.categorical["grade"].categories == ["1", "2", "3", "4"]
    run = _demo_then_serve(tmp_path, tmp_path / "data" / "loans.yaml",
                           {"grade": 2, "income": 30000.0, "sector": "tech"})
    assert "landed 6 of 6 batches" in run["stdout"]  # 2015 .. 2020 by year
    assert "delivered 1 label file" in run["stdout"]
    # Every row got its label from the separate file: none left waiting.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(run["home"] / "dagster")) as instance:
        meta = instance.get_latest_materialization_event(dg.AssetKey("train_set")) \
            .asset_materialization.metadata
        assert meta["unlabeled_rows_waiting"].value == 0
        assert meta["dagster/row_count"].value > 3000


def test_contract_errors_are_one_message_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    good = yaml.safe_load((PROJECT_ROOT / "mlops_assets/contracts/bank.yaml").read_text())
    good["categorical"]["job"]["nulable"] = True  # a typo
    good["gate"] = {"min_auc": 1.5}
    bad.write_text(yaml.safe_dump(good))
    result = _cli("--contract", str(bad), "batches", home=tmp_path / "home")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 6
    assert "categorical.job.nulable: unknown key" in result.stderr
    assert "gate.min_auc" in result.stderr and "1.5" in result.stderr


@pytest.mark.parametrize("initial", ["0", "6"])
def test_backtest_checks_its_arguments_first(tmp_path, initial):
    data_file = datasets.integer_coded(tmp_path / "data", rows=600)
    assert _cli("contract", "init", str(data_file), "--target", "churned", "--period",
                "signup_date").returncode == 0
    result = _cli("--contract", str(tmp_path / "data" / "telco.yaml"), "backtest",
                  "--initial-periods", initial, home=tmp_path / "home", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has 6 periods" in result.stderr and "between 1 and 5" in result.stderr
