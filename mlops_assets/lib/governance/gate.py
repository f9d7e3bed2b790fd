"""The promotion gate's rules, each a pure function returning (passed, why)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD
from mlops_assets.lib.evaluation import PairedComparison, _fast_auc
from mlops_assets.lib.training.model import ServingModel


@dataclass(frozen=True)
class GatePolicy:
    min_auc: float = 0.70
    auc_margin: float = 0.02  # the challenger may be at most this much worse (CI lower bound)
    log_loss_margin: float = 0.02
    recent_periods: int = 3
    min_comparison_rows: int = 1000  # reach back past recent_periods until this many rows
    max_slice_gap: float = 0.10  # error-rate gap between protected slices, beyond noise
    max_slice_drop: float = 0.05  # a slice's AUC may fall at most this much vs the champion
    n_bootstrap: int = 500
    # Above this many rows, the champion/challenger comparison and the slice comparison
    # (bootstrap CIs) run on a deterministic sample of them, and the report says so: at
    # 1000x (6M test rows) the slices' 200 resamples each took the gate past 4 GB and
    # minutes per slice.
    bootstrap_rows: int = 200_000


def recent_rows(test: pd.DataFrame, periods: int, min_rows: int = 0) -> pd.DataFrame:
    """The sealed test rows of the latest ``periods`` periods (what the model will serve),
    reaching back period by period until there are ``min_rows``: a paired CI on a few
    hundred rows is too wide to tell a better model from a worse one."""
    ordered = sorted(test[PERIOD].unique(), reverse=True)
    counts = test[PERIOD].value_counts()
    keep = ordered[:periods]
    for period in ordered[periods:]:
        if counts[keep].sum() >= min_rows:
            break
        keep.append(period)
    return test[test[PERIOD].isin(keep)]


def absolute(metrics: dict, policy: GatePolicy) -> tuple[bool, str]:
    auc = metrics["roc_auc"]
    ok = not math.isnan(auc) and auc >= policy.min_auc
    return ok, f"test AUC {auc:.4f} {'>=' if ok else '<'} minimum {policy.min_auc:.2f}"


def non_inferior(cmp: PairedComparison | None, policy: GatePolicy) -> tuple[bool, str]:
    if cmp is None:
        return True, "no champion yet: nothing to compare against"
    auc_lo = cmp.auc_delta_ci[0]
    ll_hi = cmp.log_loss_delta_ci[1]
    auc_ok = not math.isnan(auc_lo) and auc_lo >= -policy.auc_margin
    ll_ok = ll_hi <= policy.log_loss_margin
    why = (
        f"on {cmp.rows} recent sealed test rows: AUC delta {cmp.auc_delta:+.4f} "
        f"(95% CI {cmp.auc_delta_ci[0]:+.4f}..{cmp.auc_delta_ci[1]:+.4f}, must stay above "
        f"-{policy.auc_margin}); log loss delta {cmp.log_loss_delta:+.4f} (95% CI "
        f"{cmp.log_loss_delta_ci[0]:+.4f}..{cmp.log_loss_delta_ci[1]:+.4f}, must stay below "
        f"+{policy.log_loss_margin})"
    )
    return auc_ok and ll_ok, why


def _reliable(y: np.ndarray, mask: np.ndarray, min_rows: int) -> bool:
    n, pos = int(mask.sum()), int(y[mask].sum())
    return n >= min_rows and 10 <= pos <= n - 10


def slice_regressions(
    groups: dict[str, np.ndarray], y: np.ndarray, p_champion: np.ndarray,
    p_challenger: np.ndarray, n: int = 200, min_rows: int = 100, seed: int = 0,
) -> pd.DataFrame:
    """Per reliable slice (``groups``: slice name -> value per row), the challenger's AUC
    minus the champion's on the same rows, with a paired bootstrap 95% CI. A slice whose
    AUC is low for both models (the main predictor held constant inside it) is no regression;
    a slice the challenger serves worse than the champion is."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, values in groups.items():
        for value in pd.unique(values):
            mask = values == value
            if not _reliable(y, mask, min_rows):
                continue
            ys, pc, ph = y[mask], p_champion[mask], p_challenger[mask]
            deltas = []
            for _ in range(n):
                idx = rng.integers(0, len(ys), len(ys))
                deltas.append(_fast_auc(ys[idx], ph[idx]) - _fast_auc(ys[idx], pc[idx]))
            deltas = np.array(deltas)
            lo, hi = np.nanquantile(deltas, [0.025, 0.975])
            rows.append({"slice": name, "value": value, "rows": int(mask.sum()),
                         "champion_auc": _fast_auc(ys, pc), "challenger_auc": _fast_auc(ys, ph),
                         "delta": _fast_auc(ys, ph) - _fast_auc(ys, pc),
                         "delta_ci_low": float(lo), "delta_ci_high": float(hi)})
    return pd.DataFrame(rows, columns=["slice", "value", "rows", "champion_auc",
                                       "challenger_auc", "delta", "delta_ci_low",
                                       "delta_ci_high"])


def error_rate_gaps(groups: dict[str, np.ndarray], y: np.ndarray, predicted: np.ndarray,
                    min_rows: int = 100) -> pd.DataFrame:
    """For each protected column, the largest difference between two of its slices in the
    false negative rate and in the false positive rate at the model's threshold, less what
    sampling error explains (1.96 standard errors of the difference): the excess > 0 is a
    disparity the data cannot explain by chance."""
    rows = []
    for name, values in groups.items():
        for rate, of_class, wrong in (("false_negative_rate", 1, 0),
                                      ("false_positive_rate", 0, 1)):
            stats = []
            for value in pd.unique(values):
                mask = (values == value) & (y == of_class)
                k = int(mask.sum())
                if (values == value).sum() < min_rows or k < 10:
                    continue
                r = float((predicted[mask] == wrong).mean())
                stats.append((value, r, np.sqrt(max(r * (1 - r), 1e-12) / k), k))
            if len(stats) < 2:
                continue
            best = max(((a, b) for a in stats for b in stats if a[1] > b[1]),
                       key=lambda ab: ab[0][1] - ab[1][1] - 1.96 * np.hypot(ab[0][2], ab[1][2]),
                       default=None)
            if best is None:
                continue
            (hi_v, hi_r, hi_se, _), (lo_v, lo_r, lo_se, _) = best
            rows.append({"slice": name, "rate": rate, "worst": hi_v, "worst_rate": hi_r,
                         "best": lo_v, "best_rate": lo_r, "gap": hi_r - lo_r,
                         "excess": hi_r - lo_r - 1.96 * float(np.hypot(hi_se, lo_se))})
    return pd.DataFrame(rows, columns=["slice", "rate", "worst", "worst_rate", "best",
                                       "best_rate", "gap", "excess"])


def slices(regressions: pd.DataFrame | None, gaps: pd.DataFrame,
           policy: GatePolicy) -> tuple[bool, str]:
    """No slice significantly worse under the challenger than under the champion (beyond
    ``max_slice_drop``), and no protected column whose slices differ in error rates beyond
    sampling error by more than ``max_slice_gap``."""
    problems, notes = [], []
    if regressions is None:
        notes.append("no champion: no slice to compare with")
    elif regressions.empty:
        notes.append("no slice with enough rows of both classes to compare")
    else:
        worst = regressions.loc[regressions["delta_ci_high"].idxmin()]
        line = (f"{worst['slice']}={worst['value']}: AUC {worst['champion_auc']:.3f} -> "
                f"{worst['challenger_auc']:.3f} (95% CI of the change "
                f"{worst['delta_ci_low']:+.3f}..{worst['delta_ci_high']:+.3f}) on "
                f"{worst['rows']} rows")
        if worst["delta_ci_high"] < -policy.max_slice_drop:
            problems.append(f"worse than the champion beyond -{policy.max_slice_drop}: {line}")
        else:
            notes.append(f"worst slice vs the champion: {line}")
    if gaps.empty:
        notes.append("no protected column to compare error rates across")
    else:
        worst = gaps.loc[gaps["excess"].idxmax()]
        line = (f"{worst['slice']}: {worst['rate'].replace('_', ' ')} {worst['worst_rate']:.3f} "
                f"at {worst['worst']} vs {worst['best_rate']:.3f} at {worst['best']} (gap "
                f"{worst['gap']:.3f}, {worst['excess']:.3f} beyond sampling error)")
        if worst["excess"] > policy.max_slice_gap:
            problems.append(f"error-rate disparity above {policy.max_slice_gap}: {line}")
        else:
            notes.append(f"largest error-rate disparity: {line}")
    return not problems, "; ".join(problems + notes)


def smoke(model: ServingModel, records: list[dict]) -> tuple[bool, str]:
    """Predict through the serving code path; every output must be a finite probability."""
    p = model.predict_records(records)
    ok = len(p) == len(records) and bool(np.all(np.isfinite(p))) and bool(
        np.all((p >= 0) & (p <= 1))
    )
    return ok, f"{len(p)} predictions via the serving path, range {p.min():.4f}..{p.max():.4f}"
