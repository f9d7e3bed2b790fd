"""Dagster wiring only, one folder per lifecycle stage. The logic lives in ``lib/``."""
