"""A project home with two registered models (trained on real Bank rows), and the service
imported once with test settings."""

from __future__ import annotations

import importlib
import os

import pandas as pd
import pytest

from mlops_assets.config import TARGET, load_contract
from mlops_assets.lib.dataset import data, features, split
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.training import search

BANK = load_contract("bank")
TOKEN = "test-token"
SERVING_ENV = {
    "MLOPS_RELOAD_SECONDS": "0.2",
    "MLOPS_CANARY_SHARE": "0.25",
    "MLOPS_MAX_RECORDS": "50",
    "MLOPS_MAX_BODY_BYTES": "65536",
    "MLOPS_MAX_BATCH_ROWS": "500",
    "MLOPS_MAX_BATCH_BYTES": "262144",
    "MLOPS_API_TOKEN": TOKEN,
    "MLOPS_CONTRACT": "bank",
}


def train_two_models(home, bank_batches) -> tuple[str, str, pd.DataFrame]:
    frames = []
    for key in ("2008-11", "2009-04", "2009-05"):
        valid = data.validate_rows(data.parse_batch(bank_batches[key], BANK, key), BANK).valid
        frames.append(split.with_split(valid, BANK))
    rows = pd.concat(frames, ignore_index=True)
    parts = {s: rows[rows["_split"] == s] for s in ("train", "validation", "test")}
    matrix = {s: features.to_matrix(features.build_features(p, BANK), BANK)
              for s, p in parts.items()}
    registry = Registry(home)
    tags = []
    for seed in (1, 2):
        model = search.train(matrix["train"], parts["train"][TARGET].to_numpy(),
                               matrix["validation"], parts["validation"][TARGET].to_numpy(),
                               BANK, search.TrainingSpec(n_trials=2, seed=seed),
                               log=lambda _: None)
        tags.append(registry.save(BANK, model.booster, model.threshold, model.best_iteration,
                                  {"seed": seed}))
    registry.promote(tags[0], "test setup")
    return tags[0], tags[1], parts["test"]


@pytest.fixture(scope="session")
def served(tmp_path_factory, bank_batches):
    home = tmp_path_factory.mktemp("served")
    champion, other, test_rows = train_two_models(home, bank_batches)
    saved = {k: os.environ.get(k) for k in [*SERVING_ENV, "MLOPS_HOME"]}
    os.environ.update(SERVING_ENV, MLOPS_HOME=str(home))
    service = importlib.import_module("mlops_assets.serving.service")
    yield {"home": home, "champion": champion, "other": other, "test_rows": test_rows,
           "service": service}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def records_from(rows: pd.DataFrame, n: int) -> list[dict]:
    """Records as a client sends them: the raw feature values, missing as the contract's
    token or null."""
    out = []
    for row in rows.head(n)[BANK.features].to_dict("records"):
        out.append({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
    return out


@pytest.fixture(scope="session")
def client(served):
    """One ASGI app per process: BentoML registers its Prometheus metrics per app."""
    from starlette.testclient import TestClient

    with TestClient(served["service"].Classifier.to_asgi()) as c:
        yield c
