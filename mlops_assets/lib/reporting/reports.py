"""Report builders: Evidently snapshots plus a compact statistics table for the UI."""

from __future__ import annotations

import pandas as pd

from mlops_assets.config import TARGET, DatasetContract


def key_statistics(df: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """Per feature: type, missing share, and range (numeric) or distinct/top value."""
    rows = []
    for name in contract.features:
        col = df[name]
        row = {"column": name, "missing": round(float(col.isna().mean()), 4)}
        if name in contract.numeric:
            row |= {
                "type": "numeric",
                "mean": round(float(col.mean()), 3),
                "min": float(col.min()),
                "max": float(col.max()),
                "distinct / top": col.nunique(),
            }
        else:
            top = col.value_counts()
            row |= {
                "type": "categorical",
                "distinct / top": f"{col.nunique()} / {top.index[0] if len(top) else '-'}",
            }
        rows.append(row)
    return pd.DataFrame(rows).fillna("")  # categorical columns have no mean or range


def eda_snapshot(df: pd.DataFrame, contract: DatasetContract):
    """Evidently's data summary of ``df`` (features + target), tagged ``eda``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    from mlops_assets.lib.reporting.patches import patch_summary_table, patch_unique_values

    patch_unique_values()  # no category "nan" counted 0 beside the "missing" row
    patch_summary_table()  # no "target column None"

    # The label under its own name (1 = positive). Evidently 0.7 only knows a "target"
    # within a classification task, which needs a prediction column: the data summary has
    # no "target column" line, the label is summarized as a categorical column.
    label = contract.target.column
    frame = df[contract.features].copy()
    for name in contract.categorical:
        frame[name] = frame[name].astype(object)
    frame[label] = df[TARGET].astype(int).to_numpy()
    definition = DataDefinition(numerical_columns=list(contract.numeric),
                                categorical_columns=[*contract.categorical, label])
    dataset = Dataset.from_pandas(frame, data_definition=definition)
    return Report([DataSummaryPreset()]).run(
        current_data=dataset, tags=["eda"],
        name=f"data summary (train + validation); label column {label!r}, 1 = "
             f"{contract.target.positive[0]!r}")
