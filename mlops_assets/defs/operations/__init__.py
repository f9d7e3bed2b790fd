"""Operations across the stages: alerts on failed runs and checks, and storage retention."""

import dagster as dg

from mlops_assets.defs.operations import alerts, storage

defs = dg.Definitions(
    jobs=[storage.collect_storage],
    sensors=alerts.alert_sensors,
    schedules=[storage.daily_retention],
)
