"""Ingestion: each landed batch file a partition, hashed and checked against the contract; the
landing sensor and the runs it launches."""

import dagster as dg

from mlops_assets.defs.ingestion import assets, sensors

defs = dg.Definitions(
    assets=[assets.raw_batch],
    asset_checks=[assets.raw_batch_schema],
    jobs=[sensors.ingest_job, sensors.ingest_landed],
    sensors=[sensors.landing_sensor],
)
