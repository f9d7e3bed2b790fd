"""The offline backtest on the last periods of the Bank data (small budget)."""

from __future__ import annotations

import numpy as np

from mlops_assets.config import load_contract
from mlops_assets.lib import backtest, training


def test_backtest_policies_on_the_last_periods():
    detail, summary = backtest.run(load_contract("bank"), initial_periods=22,
                                   spec=training.TrainingSpec(n_trials=1),
                                   policy=backtest.TriggerPolicy(cooldown_periods=2),
                                   log=lambda _: None)
    assert list(summary["policy"]) == ["never", "every", "triggered"]
    assert set(detail["period"]) == {"2010-08", "2010-09", "2010-10", "2010-11"}
    retrains = dict(zip(summary["policy"], summary["retrains"], strict=True))
    assert retrains["never"] == 0 and retrains["every"] == 3 and retrains["triggered"] <= 2
    assert np.isfinite(summary[["mean_auc", "mean_log_loss", "mean_brier"]].to_numpy()).all()
    never = detail[detail["policy"] == "never"]
    assert never["model"].nunique() == 1  # the initial model throughout
    every = detail[detail["policy"] == "every"]
    assert list(every["model"]) == ["2010-07", "2010-08", "2010-09", "2010-10"]
    triggered = detail[(detail["policy"] == "triggered") & detail["retrained_after"]]
    assert (triggered["why"] != "").all()
