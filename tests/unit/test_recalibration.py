"""The decision rule (hold / recalibrate / retrain) on synthetic windows, the calibrator, and
the cost-based threshold."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_assets.lib import evaluation
from mlops_assets.lib.monitoring.retraining import (
    Evidence,
    LossPolicy,
    Reference,
    auc_standard_error,
    choose_action,
)
from mlops_assets.lib.training import calibration, search

POLICY = LossPolicy()


def _window(n: int, rate: float, signal: float, seed: int):
    """Labels at ``rate`` and a latent score that separates them by ``signal``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    latent = rng.normal(size=n) + signal * y
    return y, latent


def _calibrated(latent: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What a well-calibrated model on this window would predict."""
    return calibration.fit(1 / (1 + np.exp(-latent)), y).apply(1 / (1 + np.exp(-latent)))


@pytest.fixture(scope="module")
def validation():
    """The model's own validation: 10% positives, a clear ranking signal."""
    y, latent = _window(20_000, 0.10, 1.2, seed=0)
    p = _calibrated(latent, y)
    m = evaluation.metrics(y, p, 0.5)
    return Reference(m["roc_auc"], m["log_loss"], float(y.mean())), latent, y


def _shift(p: np.ndarray, logit_shift: float) -> np.ndarray:
    z = np.log(p / (1 - p)) + logit_shift
    return 1 / (1 + np.exp(-z))


def test_a_window_like_validation_is_held(validation):
    ref, _, _ = validation
    y, latent = _window(3000, 0.10, 1.2, seed=1)
    p = _calibrated(latent, y)  # as good and as calibrated as on validation
    action = choose_action(Evidence.from_labels("w", y, p), ref, POLICY)
    assert action.kind == "hold", action.why


def test_drift_alone_never_acts(validation):
    ref, _, _ = validation
    y, latent = _window(3000, 0.10, 1.2, seed=2)
    action = choose_action(Evidence.from_labels("w", y, _calibrated(latent, y),
                                                drift_share=0.9), ref, POLICY)
    assert action.kind == "hold" and "drift warning: 90%" in action.why


@pytest.mark.parametrize("drift_share", [None, 0.9])
def test_scores_off_the_rate_with_ranking_intact_recalibrate(validation, drift_share):
    """The base rate climbs from 10% to 40% (label shift): same ranking, scores too low."""
    ref, _, _ = validation
    y, latent = _window(3000, 0.40, 1.2, seed=3)
    # The old model's probabilities: calibrated for a 10% world.
    old = _shift(_calibrated(latent, y), np.log(0.1 / 0.9) - np.log(0.4 / 0.6))
    evidence = Evidence.from_labels("w", y, old, drift_share)
    action = choose_action(evidence, ref, POLICY)
    assert action.kind == "recalibrate", action.why
    assert evidence.recalibrated_log_loss < evidence.log_loss - 0.05
    assert ("drift warning" in action.why) == (drift_share is not None)


@pytest.mark.parametrize("drift_share", [None, 0.9])
def test_ranking_that_fell_retrains(validation, drift_share):
    ref, _, _ = validation
    y, latent = _window(3000, 0.10, 0.3, seed=4)  # the signal mostly gone
    action = choose_action(Evidence.from_labels("w", y, _calibrated(latent, y), drift_share),
                           ref, POLICY)
    assert action.kind == "retrain" and "ranking fell" in action.why


def test_too_few_labels_are_not_judged(validation):
    ref, _, _ = validation
    y, latent = _window(100, 0.10, 0.0, seed=5)  # hopeless, but only 100 rows
    action = choose_action(Evidence.from_labels("w", y, _calibrated(latent, y)), ref, POLICY)
    assert action.kind == "hold" and "not judged" in action.why


def test_sampling_error_keeps_a_small_window_from_retraining(validation):
    """The same small AUC dip retrains on a big window but not on a small one."""
    ref, _, _ = validation
    actions = {}
    for n in (400, 40_000):
        y, latent = _window(n, 0.10, 0.8, seed=6)
        actions[n] = choose_action(Evidence.from_labels("w", y, _calibrated(latent, y)), ref,
                                   POLICY)
    assert actions[400].kind == "hold", actions[400].why
    assert actions[40_000].kind == "retrain", actions[40_000].why


def test_auc_standard_error_shrinks_with_rows():
    assert auc_standard_error(0.75, 50, 450) > auc_standard_error(0.75, 500, 4500) > 0


@pytest.mark.parametrize("method", calibration.METHODS)
def test_calibrator_keeps_the_ranking_and_lowers_log_loss_on_a_shifted_window(method):
    y, latent = _window(4000, 0.45, 1.2, seed=7)
    stale = _shift(_calibrated(latent, y), -2.0)  # far too low for this window
    fit_half, test_half = slice(0, 2000), slice(2000, None)
    cal = calibration.fit(stale[fit_half], y[fit_half], method, fitted_on="w")
    fixed = cal.apply(stale[test_half])
    before = evaluation.metrics(y[test_half], stale[test_half], 0.5)
    after = evaluation.metrics(y[test_half], fixed, 0.5)
    assert after["log_loss"] < before["log_loss"] - 0.1
    assert abs(after["mean_prediction"] - after["positive_rate"]) < 0.03
    order = np.argsort(stale[test_half])
    assert np.all(np.diff(fixed[order]) >= -1e-12)  # monotone: ranking unchanged
    if method == "platt":
        assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-12)
    again = calibration.Calibrator.from_dict(cal.to_dict())
    np.testing.assert_array_equal(again.apply(stale), cal.apply(stale))


def test_calibration_refuses_one_class():
    with pytest.raises(ValueError, match="both classes"):
        calibration.fit(np.array([0.2, 0.3]), np.array([1, 1]), fitted_on="window w")


def test_cost_threshold_follows_the_cost_ratio():
    y, latent = _window(50_000, 0.2, 1.5, seed=8)
    p = _calibrated(latent, y)
    for ratio in (1, 4, 9):  # near Bayes' 1 / (1 + r) on calibrated scores (a flat optimum)
        t = search.choose_threshold(y, p, f"cost:{ratio}")
        assert t == pytest.approx(1 / (1 + ratio), abs=0.05)
    cheap, dear = (search.choose_threshold(y, p, f"cost:{r}") for r in (2, 20))
    assert dear < cheap  # missed positives dearer: flag more
    with pytest.raises(ValueError, match="cost ratio"):
        search.choose_threshold(y, p, "cost:0")


def test_the_sensor_and_the_backtest_use_the_same_rule():
    from mlops_assets.defs.resources import RetrainPolicyResource

    assert RetrainPolicyResource().rule() == LossPolicy()
    tuned = RetrainPolicyResource(auc_tolerance=0.1, calibration_rows=800)
    assert tuned.rule().auc_tolerance == 0.1
    assert tuned.run_config("recalibrate")["ops"]["candidate_model"]["config"] == {
        "recalibrate": True, "calibration_rows": 800}
