"""Governance: the blocking gate, the challenger's Bento validated before promotion, the
champion alias, and the one-action rollback, canary and shadow jobs."""

import dagster as dg

from mlops_assets.defs.governance import assets

defs = dg.Definitions(
    assets=[assets.gate_report, assets.candidate_bento, assets.champion],
    asset_checks=[*assets.gate_checks, assets.serves_like_offline],
    jobs=[assets.rollback, assets.set_canary, assets.set_shadow],
)
