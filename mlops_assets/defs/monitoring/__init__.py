"""Monitoring and the closed loop: the prediction log and delayed labels, windows of traffic
with drift, live performance and serving health, and the sensors that retrain or
recalibrate."""

import dagster as dg

from mlops_assets.defs.monitoring import assets, sensors

defs = dg.Definitions(
    assets=[assets.prediction_log_files, assets.feedback_files, assets.prediction_log,
            assets.feedback_labels, assets.window_traffic, assets.drift_report,
            assets.live_performance, assets.serving_health],
    asset_checks=assets.monitoring_checks,
    jobs=[sensors.log_job, sensors.feedback_job, sensors.window_job, sensors.retrain_job,
          sensors.recalibrate_job, sensors.define_daily_window],
    sensors=[sensors.prediction_log_sensor, sensors.feedback_sensor, sensors.window_sensor,
             sensors.retrain_sensor],
    schedules=[sensors.daily_monitoring],
)
