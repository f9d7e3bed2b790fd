"""The EDA report: what the data the model learns from looks like."""


import dagster as dg
import pandas as pd

from mlops_assets.config import PERIOD, TARGET
from mlops_assets.defs.metadata import markdown_table, report_link
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib import features, reports


@dg.asset(
    group_name="dataset",
    kinds={"evidently", "html"},
)
def eda_report(
    context: dg.AssetExecutionContext,
    train_set: pd.DataFrame, validation_set: pd.DataFrame, project: ProjectResource
) -> dg.MaterializeResult:
    """Evidently data summary (HTML) of the training and validation rows; never the test rows."""
    contract = project.contract()
    rows = pd.concat([train_set, validation_set], ignore_index=True)
    frame = pd.concat([features.build_features(rows, contract), rows[[TARGET, PERIOD]]], axis=1)
    path = project.paths.reports / "eda" / f"data_summary_{context.run.run_id[:8]}.html"
    published = project.report_store().publish(reports.eda_snapshot(frame, contract),
                                               contract.name, path)
    stats = reports.key_statistics(frame, contract)
    return dg.MaterializeResult(
        metadata={
            **report_link(published),
            "rows": len(frame),
            "positive_rate": round(float(frame[TARGET].mean()), 4),
            "periods": f"{frame[PERIOD].min()} .. {frame[PERIOD].max()}",
            "key_statistics": markdown_table(stats),
        }
    )
