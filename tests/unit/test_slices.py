"""Slices of the evaluation and the gate: a missing value is the slice "(missing)", never the
text "nan" (a `job=nan` row with AUC nan stood in the model card)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_assets.config import load_contract
from mlops_assets.lib import evaluation

BANK = load_contract("bank")


def test_a_missing_value_is_its_own_named_slice():
    frame = pd.DataFrame({"job": pd.Series(["admin.", np.nan, "admin."], dtype=object),
                          "age": [25.0, np.nan, 45.0], "contact": ["cellular"] * 3})
    groups = evaluation.slice_groups(frame, BANK)
    assert list(groups["job"]) == ["admin.", "(missing)", "admin."]
    assert list(groups["age_band"]) == ["[0.0, 30.0)", "(missing)", "[40.0, 50.0)"]
    rows = evaluation.slice_metrics(frame, np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]),
                                    BANK, threshold=0.5)
    assert "nan" not in set(rows["value"]) and "(missing)" in set(rows["value"])
