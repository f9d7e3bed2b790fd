"""The offline backtest on the last periods of the Bank data (small budget)."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_assets.config import load_contract
from mlops_assets.lib.monitoring import backtest
from mlops_assets.lib.training import search


def test_backtest_policies_on_the_last_periods():
    bank = load_contract("bank")
    detail, summary = backtest.run(bank, initial_periods=22,
                                   spec=search.spec_for(bank, n_trials=1),
                                   policy=backtest.TriggerPolicy(cooldown_periods=2),
                                   log=lambda _: None)
    assert list(summary["policy"]) == list(backtest.POLICIES)
    assert set(detail["period"]) == {"2010-08", "2010-09", "2010-10", "2010-11"}
    retrains = dict(zip(summary["policy"], summary["retrains"], strict=True))
    recals = dict(zip(summary["policy"], summary["recalibrations"], strict=True))
    assert retrains == {"never": 0, "every": 3, "third": 1, "recalibrate": 0,
                        "triggered": retrains["triggered"]} and retrains["triggered"] <= 2
    assert recals["recalibrate"] == 3 and recals["every"] == 0
    # Recalibrating keeps the base model's ranking: the same AUC as never acting.
    by = detail.set_index(["policy", "period"])["roc_auc"]
    for period in ("2010-09", "2010-10", "2010-11"):
        assert by["recalibrate", period] == pytest.approx(by["never", period], abs=1e-9)
    recalibrated = detail[detail["policy"] == "recalibrate"]
    assert recalibrated["model"].iloc[1].endswith("+cal@2010-08")
    # The cost rule's threshold is re-derived for each recalibrated version.
    assert recalibrated["threshold"].nunique() > 1 and (detail["cost_per_row"] >= 0).all()
    assert np.isfinite(summary[["mean_auc", "mean_log_loss", "mean_brier"]].to_numpy()).all()
    never = detail[detail["policy"] == "never"]
    assert never["model"].nunique() == 1  # the initial model throughout
    every = detail[detail["policy"] == "every"]
    assert list(every["model"]) == ["2010-07", "2010-08", "2010-09", "2010-10"]
    triggered = detail[detail["policy"] == "triggered"]
    assert set(triggered["action"]) <= {"hold", "recalibrate", "retrain"}
    assert (triggered["why"] != "").all()  # every decision says why
