"""The dataset: each batch validated (bad rows quarantined with the reason), the sealed split
over every eligible batch, and the EDA report."""

import dagster as dg

from mlops_assets.defs.dataset import assets, reports
from mlops_assets.defs.hooks import RELEASE_MEMORY

dataset_job = dg.define_asset_job(
    "build_dataset",
    selection=dg.AssetSelection.groups("dataset", "features"),
    description="Seal the split over every valid batch, build features and the EDA report.",
    hooks=RELEASE_MEMORY,
)

defs = dg.Definitions(
    assets=[assets.validate_batch, assets.sealed_split, reports.eda_report],
    asset_checks=[assets.invalid_fraction_below_limit, assets.test_set_is_sealed],
    jobs=[dataset_job],
)
