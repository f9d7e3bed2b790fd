"""Monitoring and the closed loop: windows of logged traffic and live metrics (`live`), drift
(`drift`), the retraining rule (`retraining`), its offline backtest (`backtest`), and alerts
that reach people (`alerts`)."""
