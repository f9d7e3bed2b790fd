"""The promotion gate's rules, each a pure function returning (passed, why)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD
from mlops_assets.lib.evaluation import PairedComparison
from mlops_assets.lib.model import ServingModel


@dataclass(frozen=True)
class GatePolicy:
    min_auc: float = 0.70
    auc_margin: float = 0.02  # the challenger may be at most this much worse (CI lower bound)
    log_loss_margin: float = 0.02
    recent_periods: int = 3
    min_comparison_rows: int = 1000  # reach back past recent_periods until this many rows
    max_slice_gap: float = 0.10
    n_bootstrap: int = 500


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


def slice_gap(gap: float, where: str, policy: GatePolicy) -> tuple[bool, str]:
    ok = gap <= policy.max_slice_gap
    return ok, (
        f"largest slice AUC gap beyond sampling error {gap:.4f} at {where} "
        f"(maximum {policy.max_slice_gap})"
    )


def smoke(model: ServingModel, records: list[dict]) -> tuple[bool, str]:
    """Predict through the serving code path; every output must be a finite probability."""
    p = model.predict_records(records)
    ok = len(p) == len(records) and bool(np.all(np.isfinite(p))) and bool(
        np.all((p >= 0) & (p <= 1))
    )
    return ok, f"{len(p)} predictions via the serving path, range {p.min():.4f}..{p.max():.4f}"
