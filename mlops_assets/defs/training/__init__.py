"""Training and evaluation: the challenger (search, fit, registered), its evaluation on the
sealed test set and its model card; the job that runs them through to promotion."""

import dagster as dg

from mlops_assets.defs.hooks import RELEASE_MEMORY
from mlops_assets.defs.training import assets

train_job = dg.define_asset_job(
    "train_and_promote",
    selection=dg.AssetSelection.groups("training", "evaluation", "governance", "deployment"),
    description="Tune and train a challenger, evaluate it, promote it if the gate passes, "
    "and package the champion as a Bento.",
    hooks=RELEASE_MEMORY,
)

defs = dg.Definitions(
    assets=[assets.candidate_model, assets.model_evaluation, assets.model_card],
    jobs=[train_job],
)
