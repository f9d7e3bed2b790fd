"""Model quality across data sizes: the champion's training (lib/training/search.train, as the
pipeline runs it) against LightGBM's defaults and a logistic regression, on the same sealed
test rows.

Datasets: scikit-learn's bundled breast-cancer data (569 rows, through ``contract init`` as a
new user brings it), and seeded subsamples of the bundled Adult and Bank data. Each sample is
split by the project's own content-hash split (train / validation / sealed test); the
champion searches on train + validation, LightGBM's defaults (``LGBMClassifier()``) and the
logistic regression (one-hot categories, standardized numbers, median-imputed) fit on the same
train + validation rows. Run: ``python -m benchmarks.run --only quality``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD, TARGET, DatasetContract, load_contract
from mlops_assets.lib.dataset import contract_init, data, features, split
from mlops_assets.lib.training import search

SIZES = (500, 1000, 2000, 5000)
SEEDS = (0, 1, 2, 3, 4)


def breast_cancer(folder: Path) -> DatasetContract:
    """scikit-learn's breast-cancer data as a CSV, its contract inferred by ``contract init``
    (12 row chunks, as a new user gets it)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["target"] = np.where(frame["target"] == 1, "benign", "malignant")
    path = folder / "breast_cancer.csv"
    frame.to_csv(path, index=False)
    inferred = contract_init.infer(path, "target", out_dir=folder)
    return contract_init.write(inferred, folder / "breast_cancer.yaml")


def valid_rows(contract: DatasetContract) -> pd.DataFrame:
    """Every valid row of the contract's source, with its split."""
    frames = []
    for key, raw in data.source_batches(contract).items():
        frames.append(data.validate_rows(data.parse_batch(raw, contract, key), contract).valid)
    return pd.concat(frames, ignore_index=True)


def _logistic(contract: DatasetContract):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [i for i, n in enumerate(contract.features) if n in contract.categorical]
    nums = [i for i, n in enumerate(contract.features) if n not in contract.categorical]
    prepare = ColumnTransformer([
        ("categories", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1),
                                     OneHotEncoder(handle_unknown="ignore")), cats),
        ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), nums),
    ])
    return make_pipeline(prepare, LogisticRegression(max_iter=2000))


def one_run(rows: pd.DataFrame, contract: DatasetContract, seed: int,
            n_trials: int) -> dict:
    """The three models on one sample: sealed-test AUC each, and how the search judged."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    rows = split.with_split(rows, contract)
    parts = {s: rows[rows[split.SPLIT] == s] for s in ("train", "validation", "test")}
    x = {s: features.to_matrix(features.build_features(p, contract), contract)
         for s, p in parts.items()}
    y = {s: p[TARGET].to_numpy(int) for s, p in parts.items()}
    spec = search.spec_for(contract, seed=seed, n_trials=n_trials)
    started = time.perf_counter()
    champion = search.train(
        x["train"], y["train"], x["validation"], y["validation"], contract, spec,
        log=lambda _: None, periods=np.concatenate(
            [parts["train"][PERIOD].astype(str), parts["validation"][PERIOD].astype(str)]))
    seconds = time.perf_counter() - started
    x_fit = np.vstack([x["train"], x["validation"]])
    y_fit = np.concatenate([y["train"], y["validation"]])
    cats = [i for i, n in enumerate(contract.features) if n in contract.categorical]
    defaults = lgb.LGBMClassifier(verbose=-1).fit(x_fit, y_fit, categorical_feature=cats)
    logistic = _logistic(contract).fit(x_fit, y_fit)
    test = x["test"]
    return {
        "rows": len(rows), "test_rows": len(test), "test_positives": int(y["test"].sum()),
        "champion": roc_auc_score(y["test"], champion.booster.predict(
            test, num_iteration=champion.best_iteration)),
        "lightgbm_defaults": roc_auc_score(y["test"], defaults.predict_proba(test)[:, 1]),
        "logistic_regression": roc_auc_score(y["test"], logistic.predict_proba(test)[:, 1]),
        "search_best_vs_defaults": champion.trials[0]["score"] <= max(
            t["score"] for t in champion.trials),
        "judged_by": champion.judged_by.split(" (")[0], "champion_seconds": seconds,
    }


def bench_quality(sizes=SIZES, seeds=SEEDS, n_trials: int = 20,
                  datasets=("breast_cancer", "adult", "bank")) -> dict:
    """Every dataset x size x seed; per cell the seed means and the worst seed's gap."""
    out: dict = {"sizes": list(sizes), "seeds": list(seeds), "n_trials": n_trials, "cells": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            contract = (breast_cancer(Path(tmp)) if name == "breast_cancer"
                        else load_contract(name))
            rows = valid_rows(contract)
            for size in ([len(rows)] if name == "breast_cancer" else sizes):
                runs = []
                for seed in seeds:
                    sample = rows.sample(n=min(size, len(rows)), random_state=seed)
                    runs.append(one_run(sample.reset_index(drop=True), contract, seed,
                                        n_trials))
                out["cells"][f"{name}@{size}"] = _summary(runs)
    return out


def _summary(runs: list[dict]) -> dict:
    mean = {k: statistics.fmean(r[k] for r in runs)
            for k in ("champion", "lightgbm_defaults", "logistic_regression", "test_rows",
                      "champion_seconds")}
    return {**mean,
            "worst_vs_defaults": min(r["champion"] - r["lightgbm_defaults"] for r in runs),
            "worst_vs_logistic": min(r["champion"] - r["logistic_regression"] for r in runs),
            "judged_by": runs[0]["judged_by"], "runs": runs}


def table(result: dict) -> str:
    """The table of docs/benchmarks.md."""
    lines = ["| dataset @ rows | sealed-test rows | champion | LightGBM defaults | logistic "
             "regression | champion - defaults: mean (worst seed) | judged by |",
             "|---|---|---|---|---|---|---|"]
    for cell, s in result["cells"].items():
        lines.append(
            f"| {cell} | {s['test_rows']:.0f} | {s['champion']:.4f} | "
            f"{s['lightgbm_defaults']:.4f} | {s['logistic_regression']:.4f} | "
            f"{s['champion'] - s['lightgbm_defaults']:+.4f} ({s['worst_vs_defaults']:+.4f}) "
            f"| {s['judged_by']} |")
    return "\n".join(lines)
