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


def evidently_definition(contract: DatasetContract, with_target: bool = True):
    from evidently import DataDefinition

    cats = list(contract.categorical) + ([TARGET] if with_target else [])
    return DataDefinition(numerical_columns=list(contract.numeric), categorical_columns=cats)


def eda_snapshot(df: pd.DataFrame, contract: DatasetContract):
    """Evidently's data summary of ``df`` (features + target), tagged ``eda``."""
    from evidently import Dataset, Report
    from evidently.presets import DataSummaryPreset

    frame = df[[*contract.features, TARGET]].copy()
    for name in contract.categorical:
        frame[name] = frame[name].astype(object)
    frame[TARGET] = frame[TARGET].astype(int)
    dataset = Dataset.from_pandas(frame, data_definition=evidently_definition(contract))
    return Report([DataSummaryPreset()]).run(current_data=dataset, tags=["eda"],
                                             name="data summary (train + validation)")
