"""Offline backtest of retraining policies over the periods after the initial ones.

Each period: the model in use scores the period's rows (metrics recorded), then the period's
labels arrive and the policy decides whether to retrain on every labelled row so far:
``never``, ``every`` period, or ``triggered`` by the same drift and live-performance checks
the monitoring assets run (with a cooldown in periods)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD, SPLIT, TARGET, DatasetContract
from mlops_assets.lib import data, drift, evaluation, features, split, training


@dataclass(frozen=True)
class TriggerPolicy:
    max_drift_share: float = 0.5
    max_calibration_gap: float = 0.10
    min_auc: float = 0.60
    min_f1: float = 0.20
    cooldown_periods: int = 3


@dataclass
class Model:
    booster: object
    threshold: float
    reference: pd.DataFrame
    trained_through: str


def labelled_rows(contract: DatasetContract) -> pd.DataFrame:
    """Every valid row of the bundled source with its period, split and features."""
    frames = []
    labels = None
    if contract.source.label_files:  # labels delivered apart: joined on the key column
        labels = pd.concat([data.read_label_file(p, contract) for p in contract.label_paths()])
        labels = labels.rename(columns={contract.key_column: "request_id"})
        labels[TARGET] = labels[contract.target.column].map(contract.label_codes)
        labels = labels.dropna(subset=[TARGET])
    for key, raw in data.source_batches(contract).items():
        valid = data.validate_rows(data.parse_batch(raw, contract, key), contract).valid
        valid, _ = split.apply_labels(valid, labels, contract)
        frames.append(split.with_split(valid, contract))
    rows = pd.concat(frames, ignore_index=True)
    return pd.concat([features.build_features(rows, contract), rows[[PERIOD, SPLIT, TARGET]]],
                     axis=1)


def fit(rows: pd.DataFrame, contract: DatasetContract, spec: training.TrainingSpec) -> Model:
    train = rows[rows[SPLIT] == "train"]
    valid = rows[rows[SPLIT] == "validation"]
    x = features.to_matrix(train, contract)
    trained = training.train(x, train[TARGET].to_numpy(int),
                             features.to_matrix(valid, contract), valid[TARGET].to_numpy(int),
                             contract, spec, log=lambda _: None)
    reference = drift.sample(train[contract.features], 20_000).copy()
    reference[drift.PREDICTION] = trained.booster.predict(
        features.to_matrix(reference, contract), num_iteration=trained.best_iteration)
    return Model(trained.booster, trained.threshold, reference, rows[PERIOD].max())


def _should_retrain(model: Model, period_rows: pd.DataFrame, p: np.ndarray, y: np.ndarray,
                    contract: DatasetContract, policy: TriggerPolicy) -> tuple[bool, str]:
    current = period_rows[contract.features].copy()
    current[drift.PREDICTION] = p
    share = drift.compute_drift(model.reference, current, contract).drifted_share
    m = evaluation.metrics(y, p, model.threshold)
    gap = m["positive_rate"] - m["mean_prediction"]
    reasons = []
    if share > policy.max_drift_share:
        reasons.append(f"drift {share:.0%}")
    if abs(gap) > policy.max_calibration_gap:
        reasons.append(f"calibration gap {gap:+.2f}")
    if m["roc_auc"] == m["roc_auc"] and m["roc_auc"] < policy.min_auc:
        reasons.append(f"AUC {m['roc_auc']:.2f}")
    if m["f1"] < policy.min_f1:
        reasons.append(f"F1 {m['f1']:.2f}")
    return bool(reasons), ", ".join(reasons)


def run(
    contract: DatasetContract,
    initial_periods: int = 12,
    spec: training.TrainingSpec | None = None,
    policy: TriggerPolicy | None = None,
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-period results of the three policies, and the summary per policy."""
    spec = spec or training.TrainingSpec(n_trials=3)
    policy = policy or TriggerPolicy()
    periods = list(data.source_batches(contract))  # cheap check before the long part
    if initial_periods < 1 or len(periods) <= initial_periods:
        raise ValueError(
            f"backtest: {contract.name!r} has {len(periods)} periods "
            f"({periods[0]} to {periods[-1]}); --initial-periods {initial_periods} leaves "
            f"{max(0, len(periods) - initial_periods)} to replay: use --initial-periods "
            f"between 1 and {len(periods) - 1}" if periods else
            f"backtest: {contract.name!r} has no periods")
    rows = labelled_rows(contract)
    periods = sorted(rows[PERIOD].unique())
    initial = fit(rows[rows[PERIOD].isin(periods[:initial_periods])], contract, spec)
    records = []
    for name in ("never", "every", "triggered"):
        model, last_retrain = initial, -10**9
        started = time.perf_counter()
        for i, period in enumerate(periods[initial_periods:], start=initial_periods):
            part = rows[rows[PERIOD] == period]
            y = part[TARGET].to_numpy(int)
            p = model.booster.predict(features.to_matrix(part, contract))
            m = evaluation.metrics(y, p, model.threshold)
            retrain, why = False, ""
            if name == "every":
                retrain, why = True, "every period"
            elif name == "triggered" and i - last_retrain >= policy.cooldown_periods:
                retrain, why = _should_retrain(model, part, p, y, contract, policy)
            records.append({
                "policy": name, "period": period, "rows": len(part), "model": model.trained_through,
                "roc_auc": m["roc_auc"], "log_loss": m["log_loss"], "brier": m["brier"],
                "f1": m["f1"], "recall": m["recall"],
                "calibration_gap": m["mean_prediction"] - m["positive_rate"],
                "retrained_after": retrain, "why": why,
            })
            if retrain:  # the period's labels have arrived: retrain on all data so far
                model = fit(rows[rows[PERIOD] <= period], contract, spec)
                last_retrain = i
        log(f"policy {name}: {time.perf_counter() - started:.1f} s")
    detail = pd.DataFrame(records)
    # The model retrained after the last period never scores anything: not counted.
    scored = detail[detail["period"] != periods[-1]]
    summary = detail.groupby("policy", sort=False).agg(
        mean_auc=("roc_auc", "mean"), worst_auc=("roc_auc", "min"),
        mean_log_loss=("log_loss", "mean"), mean_brier=("brier", "mean"),
        mean_f1=("f1", "mean"), mean_recall=("recall", "mean"),
        mean_abs_calibration_gap=("calibration_gap", lambda s: s.abs().mean()),
    )
    summary["retrains"] = scored.groupby("policy", sort=False)["retrained_after"].sum()
    return detail, summary.reset_index()
