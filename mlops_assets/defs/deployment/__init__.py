"""Deployment: the champion as a BentoML Bento, what `bentoml serve` serves."""

import dagster as dg

from mlops_assets.defs.deployment import assets

defs = dg.Definitions(assets=[assets.bento])
