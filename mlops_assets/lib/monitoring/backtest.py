"""Offline backtest of retraining policies over the periods after the initial ones.

Each period: the model in use scores the period's rows (metrics recorded), then the period's
labels arrive and the policy acts on the model: ``never``; retrain on every labelled row so far
``every`` period or every ``third``; ``recalibrate`` only (a Platt calibrator refit on the
latest labelled rows, the base model kept); or ``triggered``: the rule the retraining sensor
uses (``retraining.choose_action``: hold, recalibrate or retrain on what the labels say,
drift a warning only), with a cooldown in periods between full retrains."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD, SPLIT, TARGET, DatasetContract
from mlops_assets.lib import evaluation
from mlops_assets.lib.dataset import data, features, split
from mlops_assets.lib.monitoring import drift
from mlops_assets.lib.monitoring.retraining import Evidence, LossPolicy, Reference, choose_action
from mlops_assets.lib.training import calibration, search

POLICIES = ("never", "every", "third", "recalibrate", "triggered")


@dataclass(frozen=True)
class TriggerPolicy:
    rule: LossPolicy = LossPolicy()
    cooldown_periods: int = 3  # between full retrains; recalibration is cheap and has none


@dataclass
class Model:
    booster: object
    threshold: float
    reference: pd.DataFrame  # drift reference
    trained_through: str
    validation: Reference
    calibrator: calibration.Calibrator | None = None

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.scores(x)
        return raw if self.calibrator is None else self.calibrator.apply(raw)

    @property
    def name(self) -> str:
        return self.trained_through + (f"+cal@{self.calibrator.fitted_on}"
                                       if self.calibrator else "")


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


def fit(rows: pd.DataFrame, contract: DatasetContract, spec: search.TrainingSpec) -> Model:
    train = rows[rows[SPLIT] == "train"]
    valid = rows[rows[SPLIT] == "validation"]
    x = features.to_matrix(train, contract)
    trained = search.train(x, train[TARGET].to_numpy(int),
                             features.to_matrix(valid, contract), valid[TARGET].to_numpy(int),
                             contract, spec, log=lambda _: None)
    reference = drift.sample(train[contract.features], 20_000).copy()
    reference[drift.PREDICTION] = trained.booster.predict(
        features.to_matrix(reference, contract), num_iteration=trained.best_iteration)
    v = trained.validation_metrics
    return Model(trained.booster, trained.threshold, reference, rows[PERIOD].max(),
                 Reference(v["auc"], v["log_loss"], float(valid[TARGET].mean())))


def recalibrate(model: Model, x: np.ndarray, y: np.ndarray, period: str,
                spec: search.TrainingSpec) -> Model:
    """The base booster with a calibrator refit on one labelled period (never stacked on an
    earlier calibrator) and its threshold re-derived there by the spec's rule."""
    cal = calibration.fit(model.scores(x), y, fitted_on=period)
    threshold = search.choose_threshold(y, cal.apply(model.scores(x)), spec.threshold_rule)
    return replace(model, calibrator=cal, threshold=threshold)


def _cost(y: np.ndarray, flagged: np.ndarray, spec: search.TrainingSpec) -> dict:
    """Under a ``cost:<r>`` threshold rule: the cost per row of the decisions, in false-alarm
    units (r per missed positive, 1 per false alarm): what the threshold is chosen to lower."""
    if not spec.threshold_rule.startswith("cost:"):
        return {}
    ratio = float(spec.threshold_rule.split(":", 1)[1])
    missed, alarms = int((~flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
    return {"cost_per_row": (ratio * missed + alarms) / max(len(y), 1)}


def _evidence(model: Model, part: pd.DataFrame, p: np.ndarray, y: np.ndarray,
              contract: DatasetContract, period: str) -> Evidence:
    current = part[contract.features].copy()
    current[drift.PREDICTION] = p
    share = drift.compute_drift(model.reference, current, contract).drifted_share
    return Evidence.from_labels(period, y, p, share)


def run(
    contract: DatasetContract,
    initial_periods: int = 12,
    spec: search.TrainingSpec | None = None,
    policy: TriggerPolicy | None = None,
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-period results of every policy in POLICIES, and the summary per policy."""
    spec = spec or search.TrainingSpec(n_trials=3)
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
    fits: dict[str, Model] = {}  # trained through period -> model: the same data, the same model

    def retrained(period: str) -> Model:
        if period not in fits:
            fits[period] = fit(rows[rows[PERIOD] <= period], contract, spec)
        return fits[period]

    for name in POLICIES:
        model, last_retrain = initial, initial_periods - 1
        started = time.perf_counter()
        for i, period in enumerate(periods[initial_periods:], start=initial_periods):
            part = rows[rows[PERIOD] == period]
            y = part[TARGET].to_numpy(int)
            x = features.to_matrix(part, contract)
            p = model.predict(x)
            m = evaluation.metrics(y, p, model.threshold)
            action, why = "hold", ""
            if name == "every":
                action, why = "retrain", "every period"
            elif name == "third" and i - last_retrain >= 3:
                action, why = "retrain", "every third period"
            elif name == "recalibrate" and 0 < y.sum() < len(y):
                action, why = "recalibrate", "every period"
            elif name == "triggered":
                decided = choose_action(_evidence(model, part, p, y, contract, period),
                                        model.validation, policy.rule)
                action, why = decided.kind, decided.why
                if action == "retrain" and i - last_retrain < policy.cooldown_periods:
                    action, why = "recalibrate", (
                        f"retrain held by the cooldown ({i - last_retrain} of "
                        f"{policy.cooldown_periods} periods), recalibrated instead: {why}")
            records.append({
                "policy": name, "period": period, "rows": len(part), "model": model.name,
                "roc_auc": m["roc_auc"], "log_loss": m["log_loss"], "brier": m["brier"],
                "f1": m["f1"], "recall": m["recall"], "precision": m["precision"],
                "threshold": model.threshold, **_cost(y, p >= model.threshold, spec),
                "calibration_gap": m["mean_prediction"] - m["positive_rate"],
                "action": action, "retrained_after": action == "retrain", "why": why,
            })
            # The period's labels have arrived: act on them for the next period.
            if action == "retrain":
                model, last_retrain = retrained(period), i
            elif action == "recalibrate":
                window = calibration.latest_rows(rows[rows[PERIOD] <= period],
                                                 policy.rule.calibration_rows)
                model = recalibrate(model, features.to_matrix(window, contract),
                                    window[TARGET].to_numpy(int), period, spec)
        log(f"policy {name}: {time.perf_counter() - started:.1f} s")
    detail = pd.DataFrame(records)
    # The model retrained after the last period never scores anything: not counted.
    scored = detail[detail["period"] != periods[-1]]
    summary = detail.groupby("policy", sort=False).agg(
        mean_auc=("roc_auc", "mean"), worst_auc=("roc_auc", "min"),
        mean_log_loss=("log_loss", "mean"), mean_brier=("brier", "mean"),
        mean_f1=("f1", "mean"), mean_recall=("recall", "mean"),
        mean_abs_calibration_gap=("calibration_gap", lambda s: s.abs().mean()),
        **({"mean_cost_per_row": ("cost_per_row", "mean")} if "cost_per_row" in detail else {}),
    )
    summary["retrains"] = scored.groupby("policy", sort=False)["retrained_after"].sum()
    summary["recalibrations"] = scored.assign(
        recal=scored["action"] == "recalibrate").groupby("policy", sort=False)["recal"].sum()
    return detail, summary.reset_index()
