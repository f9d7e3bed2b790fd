"""Dagster wiring only, one folder per lifecycle stage. The logic lives in ``lib/``."""

import warnings

import dagster as dg

# Partitioned asset checks (one check result per batch) are a preview feature in 1.13; we
# rely on them knowingly, so the warning is not repeated on every load.
warnings.filterwarnings(
    "ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning
)
# Dagster's own @sensor passes `owners=None` to a beta parameter and warns on every load of
# the code location (in every launched run's console); nothing of ours uses it.
warnings.filterwarnings("ignore", "Parameter `owners` of initializer", dg.BetaWarning)
# Output(data_version=...) is beta in 1.13; the data versions of batches rely on it.
warnings.filterwarnings("ignore", "Parameter `data_version` of initializer", dg.BetaWarning)
