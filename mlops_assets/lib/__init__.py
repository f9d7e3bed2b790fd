"""Dagster-free logic: every function here can be called and tested without an orchestrator."""
