"""Model evaluation on the sealed test rows: metrics with a bootstrap CI, calibration,
slices, a paired champion/challenger comparison, and Evidently's classification report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_assets.config import DatasetContract


def _fast_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by ranks (Mann-Whitney), ties averaged; same value as sklearn's."""
    ranks = pd.Series(p).rank(method="average").to_numpy()
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    return decision_metrics(y, p >= threshold)


def decision_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and false-positive rate of 0/1 decisions."""
    pred = pred.astype(bool)
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
    }


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking, probability and decision metrics. AUC-type metrics are NaN for one class."""
    # Imported here: scikit-learn costs 2.1 s of the 6 s every run process spends importing
    # the code location, and most runs (ingestion, monitoring) never evaluate a model.
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    both = len(np.unique(y)) == 2
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_prediction": float(p.mean()) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        **threshold_metrics(y, p, threshold),
    }



def bootstrap_auc_ci(
    y: np.ndarray, p: np.ndarray, n: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        values.append(_fast_auc(y[idx], p[idx]))
    values = np.array(values)
    values = values[~np.isnan(values)]
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed positive rate in equal-width probability bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    df = pd.DataFrame({"bin": which, "y": y, "p": p})
    table = df.groupby("bin").agg(rows=("y", "size"), mean_predicted=("p", "mean"),
                                  observed_rate=("y", "mean")).reset_index()
    table["range"] = [f"{edges[b]:.1f}-{edges[b + 1]:.1f}" for b in table["bin"]]
    return table[["range", "rows", "mean_predicted", "observed_rate"]].round(4)


def slice_values(frame: pd.DataFrame, contract: DatasetContract, name: str) -> pd.Series:
    """The value of slice ``name`` per row, as text, a missing value as missing (not the text
    "nan", which made a slice of its own): a categorical column, or the age band."""
    if name == "age_band" and contract.age_bands:
        bands = contract.age_bands
        values = pd.cut(frame[bands.column], bands.edges, right=False)
    else:
        values = frame[name]
    return values.astype(str).where(values.notna())


def slice_groups(frame: pd.DataFrame, contract: DatasetContract,
                 only: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Each of the contract's slices (those in ``only``, if given): its value per row,
    missing values as ``(missing)``."""
    out = {}
    for name in contract.slices if only is None else [n for n in contract.slices if n in only]:
        series = slice_values(frame, contract, name).astype(object)
        out[name] = series.where(series.notna(), "(missing)").to_numpy()
    return out


def slice_metrics(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, contract: DatasetContract,
    threshold: float, min_rows: int = 100,
) -> pd.DataFrame:
    rows = []
    for name in contract.slices:  # one slice's values (a string per row) held at a time
        values = slice_groups(frame, contract, only=[name])[name]
        for value in pd.unique(values):
            mask = values == value
            m = metrics(y[mask], p[mask], threshold)
            n_pos = int(y[mask].sum())
            rows.append({"slice": name, "value": value, "rows": int(mask.sum()),
                         "positives": n_pos, "roc_auc": m["roc_auc"],
                         "auc_se": auc_standard_error(m["roc_auc"], n_pos, int(mask.sum()) - n_pos),
                         "log_loss": m["log_loss"], "f1": m["f1"],
                         "reliable": bool(mask.sum() >= min_rows and 10 <= n_pos
                                          <= mask.sum() - 10)})
    return pd.DataFrame(rows).sort_values(["slice", "rows"], ascending=[True, False])


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate."""
    if not n_pos or not n_neg or np.isnan(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def max_slice_gap(slices: pd.DataFrame, overall_auc: float) -> tuple[float, str]:
    """The largest AUC shortfall of a reliable slice below the overall AUC that the slice's
    sampling error cannot explain: overall AUC - (slice AUC + 1.96 SE). A small slice with a
    low but noisy AUC is reported in the table, not failed on."""
    reliable = slices[slices["reliable"] & slices["roc_auc"].notna()]
    if reliable.empty:
        return 0.0, "no slice has enough rows of both classes"
    gaps = overall_auc - (reliable["roc_auc"] + 1.96 * reliable["auc_se"])
    row = reliable.loc[gaps.idxmax()]
    return float(max(gaps.max(), 0.0)), (
        f"{row['slice']}={row['value']} (AUC {row['roc_auc']:.3f} +/- "
        f"{1.96 * row['auc_se']:.3f} on {row['rows']} rows)"
    )


@dataclass(frozen=True)
class PairedComparison:
    rows: int
    auc_delta: float  # challenger - champion
    auc_delta_ci: tuple[float, float]
    log_loss_delta: float  # challenger - champion (lower is better)
    log_loss_delta_ci: tuple[float, float]


def paired_bootstrap(
    y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, n: int = 500,
    seed: int = 0, level: float = 0.95,
) -> PairedComparison:
    """Both models scored on the same resampled rows each time, so the CI is of the paired
    difference (much tighter than comparing two separate CIs)."""
    rng = np.random.default_rng(seed)
    pc = np.clip(p_champion, 1e-15, 1 - 1e-15)
    ph = np.clip(p_challenger, 1e-15, 1 - 1e-15)
    ll_c = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    ll_h = -(y * np.log(ph) + (1 - y) * np.log(1 - ph))
    d_auc, d_ll = [], []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        d_auc.append(_fast_auc(y[idx], ph[idx]) - _fast_auc(y[idx], pc[idx]))
        d_ll.append(ll_h[idx].mean() - ll_c[idx].mean())
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    d_auc = np.array(d_auc)
    d_auc = d_auc[~np.isnan(d_auc)]
    auc_ci = tuple(float(v) for v in np.quantile(d_auc, q)) if len(d_auc) else (np.nan, np.nan)
    return PairedComparison(
        rows=len(y),
        auc_delta=_fast_auc(y, ph) - _fast_auc(y, pc),
        auc_delta_ci=auc_ci,
        log_loss_delta=float(ll_h.mean() - ll_c.mean()),
        log_loss_delta_ci=tuple(float(v) for v in np.quantile(d_ll, q)),
    )


def classification_snapshot(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, contract: DatasetContract,
    threshold: float, tags: list[str], name: str, timestamp=None, calibration: bool = False,
):
    """Evidently's classification report (probabilistic, binary) as a snapshot; with
    ``calibration``, also the mean prediction and the observed positive rate (the
    dashboard's calibration per window)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue
    from evidently.presets import ClassificationPreset

    # The label under the contract's own name (the report is titled "Target: 'y'"), 1 =
    # positive; "prediction" is its predicted probability.
    label = contract.target.column
    if label in contract.features or label == "prediction":
        label = f"{label} (label)"
    data = pd.DataFrame({label: y.astype(int), "prediction": p})
    for column in contract.numeric:
        data[column] = frame[column].to_numpy()
    numeric = list(contract.numeric)
    if calibration:  # copies typed as numbers: Evidently summarizes role columns no further
        data["predicted_probability"], data["observed_label"] = p, y.astype(float)
        numeric += ["predicted_probability", "observed_label"]
    definition = DataDefinition(
        classification=[BinaryClassification(target=label, prediction_probas="prediction",
                                             pos_label=1)],
        numerical_columns=numeric,
    )
    dataset = Dataset.from_pandas(data, data_definition=definition)
    metrics = [ClassificationPreset(probas_threshold=threshold)]
    if calibration:
        metrics += [MeanValue(column="predicted_probability"),
                    MeanValue(column="observed_label")]
    return Report(metrics).run(current_data=dataset, tags=tags, name=name, timestamp=timestamp)
