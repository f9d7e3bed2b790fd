"""Recalibration: a monotone map from a model's scores to probabilities, refit on the latest
labelled window when the scores drift off the observed rates but still rank well.

Fitted with scikit-learn (Platt: ``LogisticRegression`` on the log-odds; isotonic:
``IsotonicRegression``), stored as plain numbers in ``calibrator.json`` beside the booster and
applied with numpy, so serving needs no scikit-learn. A monotone map never changes the order of
the scores: ranking (AUC) is the base model's, only the probabilities move.

Platt is the default: two parameters, stable on a few hundred labels. Isotonic needs more
rows (it fits a step per distinct level) and can flatten the top scores into ties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD

METHODS = ("platt", "isotonic")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibrator:
    method: str
    params: dict  # platt: slope, intercept; isotonic: x, y (the fitted steps)
    rows: int  # labelled rows it was fitted on
    positive_rate: float  # observed on those rows
    fitted_on: str = ""  # what the rows were (a window, periods)
    extra: dict = field(default_factory=dict)

    def apply(self, p: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            z = self.params["slope"] * _logit(p) + self.params["intercept"]
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(np.asarray(p, dtype=float), self.params["x"], self.params["y"])
        raise ValueError(f"unknown calibration method {self.method!r}: use one of {METHODS}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Calibrator:
        """A stored calibrator, checked: a map from score to probability must be finite
        and increasing (a negated slope would serve every probability upside down)."""
        if not isinstance(raw, dict):
            raise ValueError(f"expected an object, got {type(raw).__name__}")
        try:
            calibrator = cls(**raw)
        except TypeError as err:
            raise ValueError(f"not a calibrator ({err})") from err
        if calibrator.method not in METHODS:
            raise ValueError(f"unknown calibration method {calibrator.method!r}: use one of "
                             f"{METHODS}")
        calibrator.check()
        return calibrator

    def check(self) -> None:
        params = self.params if isinstance(self.params, dict) else {}
        if self.method == "platt":
            slope, intercept = params.get("slope"), params.get("intercept")
            if not all(isinstance(v, int | float) and np.isfinite(v) for v in (slope,
                                                                             intercept)):
                raise ValueError(f"platt slope {slope!r} and intercept {intercept!r} must be "
                                 "finite numbers")
            if slope <= 0:
                raise ValueError(f"platt slope {slope} is not positive: probabilities would "
                                 "fall as the score rises")
            return
        x, y = (np.asarray(params.get(k, []), dtype=float) for k in ("x", "y"))
        if len(x) < 2 or len(x) != len(y) or not (np.isfinite(x).all() and
                                                  np.isfinite(y).all()):
            raise ValueError(f"isotonic x ({len(x)}) and y ({len(y)}) must be two or more "
                             "finite numbers each, as many of one as of the other")
        if (np.diff(x) < 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1:
            raise ValueError("isotonic steps must increase, with probabilities in [0, 1]")


def fit(p: np.ndarray, y: np.ndarray, method: str = "platt", fitted_on: str = "") -> Calibrator:
    """Fit a calibrator of the scores ``p`` to the labels ``y`` (both classes needed)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    if len(p) != len(y):
        raise ValueError(f"calibration: {len(p)} scores but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError(f"calibration needs both classes; the {len(y)} labelled rows "
                         f"{fitted_on and f'of {fitted_on} '}have only class {y[:1].tolist()}")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression  # lazily: see evaluation.metrics

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p).reshape(-1, 1), y)
        params = {"slope": float(lr.coef_[0, 0]), "intercept": float(lr.intercept_[0])}
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=_EPS, y_max=1 - _EPS, out_of_bounds="clip").fit(p, y)
        params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    else:
        raise ValueError(f"unknown calibration method {method!r}: use one of {METHODS}")
    return Calibrator(method, params, int(len(y)), float(y.mean()), fitted_on)


def cross_fitted(p: np.ndarray, y: np.ndarray, method: str = "platt",
                 folds: int = 2, seed: int = 0) -> np.ndarray:
    """The scores as a calibrator fitted on the *other* folds would map them: an honest
    estimate of what recalibrating on this window buys (no row judges its own fit)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    order = np.random.default_rng(seed).permutation(len(p))
    out = np.empty(len(p))
    for k in range(folds):
        held = order[k::folds]
        rest = np.setdiff1d(order, held)
        if len(np.unique(y[rest])) < 2:
            out[held] = p[held]
            continue
        out[held] = fit(p[rest], y[rest], method).apply(p[held])
    return out


def latest_periods(counts: pd.Series, min_rows: int) -> list[str]:
    """The latest period, with earlier periods added until their rows (``counts``: rows by
    period) are at least ``min_rows`` (or no more periods): the window a recalibration is
    fitted on."""
    take, rows = [], 0
    for period in sorted(counts.index, reverse=True):
        take.append(period)
        rows += int(counts[period])
        if rows >= min_rows:
            break
    return take


def latest_rows(rows: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    """The rows of ``latest_periods``."""
    return rows[rows[PERIOD].isin(latest_periods(rows[PERIOD].value_counts(), min_rows))]
