"""Dagster wiring only, one folder per lifecycle stage. The logic lives in ``lib/``."""

import warnings

import dagster as dg

# Partitioned asset checks (one check result per batch) are a preview feature in 1.13; we
# rely on them knowingly, so the warning is not repeated on every load.
warnings.filterwarnings(
    "ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning
)
