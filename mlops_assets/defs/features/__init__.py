"""Features: the one feature function applied to each sealed split (built by the dataset's
job)."""

import dagster as dg

from mlops_assets.defs.features import assets

defs = dg.Definitions(
    assets=[assets.train_features, assets.validation_features, assets.test_features],
    asset_checks=assets.feature_checks,
)
