"""Helpers shared by test modules: HTTP calls to a real server, a real `bentoml serve`, and
small model versions registered in a real BentoML store."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import lightgbm as lgb
import numpy as np

from mlops_assets.config import PROJECT_ROOT, DatasetContract
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.platform.procs import free_port, server


def post(port: int, records: list[dict], headers: dict | None = None,
         timeout: float = 10) -> tuple[int, list | dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=json.dumps({"records": records}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def answers(url: str) -> bool:
    """Does ``url`` answer 200 now?"""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def post_table(port: int, body: bytes, media: str, timeout: float = 30) -> tuple[int, bytes]:
    """POST a table to /predict_batch; the status and the raw answer."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict_batch", data=body,
                                 headers={"Content-Type": media})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_status(port: int, path: str) -> int:
    return get(port, path)[0]


@contextmanager
def bentoml_serve(home: Path, log: Path, ready_path: str = "/livez", **env: str):
    """A real `bentoml serve` in the repository root on a free port, serving the registry of
    ``home``; yields ``(port, proc)`` and stops it by its PID."""
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", "--port", str(port)]
    full_env = {"MLOPS_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
                "MLOPS_RELOAD_SECONDS": "0.5", "MLOPS_CANARY_SHARE": "0", **env}
    with server(cmd, f"http://127.0.0.1:{port}{ready_path}", log, full_env, PROJECT_ROOT,
                timeout=120) as proc:
        yield port, proc


def wait_until(predicate, timeout: float, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not reached after {timeout} s")


def tiny_models(home: Path, contract: DatasetContract, n: int) -> list[str]:
    """``n`` real model versions (a few trees on random rows) in the registry's store:
    enough to load, serve and move aliases between, in milliseconds."""
    rng = np.random.default_rng(0)
    features = len(contract.features)
    registry = Registry(home)
    tags = []
    for seed in range(n):
        x = rng.normal(size=(300, features))
        y = (x[:, -1] + rng.normal(size=300) > 0).astype(int)
        booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1,
                             "seed": seed}, lgb.Dataset(x, y), num_boost_round=3 + seed)
        tags.append(registry.save(contract, booster, 0.5, booster.current_iteration(),
                                  {"seed": seed}))
    return tags


def contract_with_gate(folder: Path, **gate) -> Path:
    """The Bank contract with other gate thresholds, as a file (a CLI process or a launched
    run loads the contract named by --contract / MLOPS_CONTRACT)."""
    import yaml

    from mlops_assets.config import CONTRACTS_DIR, DATA_DIR

    raw = yaml.safe_load((CONTRACTS_DIR / "bank.yaml").read_text())
    raw["source"]["files"] = [str(DATA_DIR / f) for f in raw["source"]["files"]]
    raw["gate"] = {**raw.get("gate", {}), **gate}
    path = Path(folder) / "bank-gate.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
