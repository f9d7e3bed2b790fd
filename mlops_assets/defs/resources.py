"""Resources shared by every stage: the project (home + contract) and the parquet IO manager."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.config import DatasetContract, Paths, load_contract
from mlops_assets.lib import io
from mlops_assets.lib.gate import GatePolicy
from mlops_assets.lib.registry import Registry

# How often sensors look, in seconds (read when the code location loads): 30 by default;
# the replay sets MLOPS_SENSOR_INTERVAL lower.
SENSOR_INTERVAL = int(os.environ.get("MLOPS_SENSOR_INTERVAL", "30"))

# Every arriving batch is one partition. Sensors add keys; nothing else does.
batches = dg.DynamicPartitionsDefinition(name="batches")


class ProjectResource(dg.ConfigurableResource):
    """Where the pipeline keeps its state, and which dataset contract it runs."""

    home: str
    contract_name: str = "bank"

    def contract(self) -> DatasetContract:
        return load_contract(self.contract_name)

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    def registry(self) -> Registry:
        return Registry(self.home)


class GateResource(dg.ConfigurableResource):
    """The promotion gate's thresholds (see lib/gate.py); override them in the launchpad."""

    min_auc: float = GatePolicy.min_auc
    auc_margin: float = GatePolicy.auc_margin
    log_loss_margin: float = GatePolicy.log_loss_margin
    recent_periods: int = GatePolicy.recent_periods
    min_comparison_rows: int = GatePolicy.min_comparison_rows
    max_slice_gap: float = GatePolicy.max_slice_gap
    n_bootstrap: int = GatePolicy.n_bootstrap

    def policy(self) -> GatePolicy:
        return GatePolicy(**self.model_dump())


class ParquetIOManager(dg.ConfigurableIOManager):
    """Data frames as parquet under ``base_dir/<asset key>/<partition>.parquet`` (dicts as
    JSON), written atomically. An unpartitioned asset reading a partitioned one gets
    ``{partition: frame}`` for the partitions that exist (a batch rejected by a blocking check
    has none)."""

    base_dir: str

    def _path(self, key: dg.AssetKey, partition: str | None, suffix=".parquet") -> Path:
        base = Path(self.base_dir).joinpath(*key.path)
        return base / f"{partition}{suffix}" if partition is not None else base.with_suffix(
            suffix
        )

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | dict) -> None:
        if obj is None:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        if isinstance(obj, dict):
            io.write_json(self._path(context.asset_key, partition, ".json"), obj)
        else:
            io.write_parquet(self._path(context.asset_key, partition), obj)

    def _read(self, key: dg.AssetKey, partition: str | None) -> pd.DataFrame | dict | None:
        json_path = self._path(key, partition, ".json")
        if json_path.is_file():
            return io.read_json(json_path)
        path = self._path(key, partition)
        return pd.read_parquet(path) if path.is_file() else None

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict:
        key = context.asset_key
        if not context.has_asset_partitions:
            partitions = [None]
        elif context.has_partition_key and context.asset_partition_keys == [
            context.partition_key
        ]:
            partitions = [context.partition_key]
        else:
            frames = {p: self._read(key, p) for p in context.asset_partition_keys}
            missing = sorted(p for p, v in frames.items() if v is None)
            if missing:
                context.log.warning(f"{key.to_user_string()}: no stored data for {missing}")
            return {p: v for p, v in frames.items() if v is not None}
        value = self._read(key, partitions[0])
        if value is None:
            where = f" partition {partitions[0]!r}" if partitions[0] else ""
            raise FileNotFoundError(f"{key.to_user_string()}{where} is not stored under "
                                    f"{self.base_dir}: materialize it first")
        return value


class MonitoringResource(dg.ConfigurableResource):
    """Limits the monitoring checks hold each window to."""

    max_drift_share: float = 0.5  # Evidently's dataset-drift default
    min_labelled_rows: int = 100
    min_auc: float = 0.60
    min_f1: float = 0.20
    max_calibration_gap: float = 0.10
    max_latency_p99_ms: float = 250.0


class RetrainPolicyResource(dg.ConfigurableResource):
    """When the retraining sensor may launch (see lib/retraining.py), and how the runs it
    launches train: search trials and the data window (latest N periods; None = all)."""

    cooldown_s: float = 3600.0
    min_new_rows: int = 5000
    trials: int = 20
    recent_periods: int | None = None

    def run_config(self) -> dict:
        config = {"n_trials": self.trials, "recent_periods": self.recent_periods}
        return {"ops": {"candidate_model": {"config": config}}}

    def policy(self):
        from mlops_assets.lib.retraining import RetrainPolicy

        return RetrainPolicy(cooldown_s=self.cooldown_s, min_new_rows=self.min_new_rows)
