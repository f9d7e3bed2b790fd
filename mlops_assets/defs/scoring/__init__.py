"""Batch scoring: each file dropped in the scoring folder scored by the champion."""

import dagster as dg

from mlops_assets.defs.scoring import assets

defs = dg.Definitions(
    assets=[assets.batch_scores],
    jobs=[assets.score_job],
    sensors=[assets.scoring_sensor],
)
