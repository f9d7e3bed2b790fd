"""Resources shared by every stage: the project (home + contract) and the parquet IO manager."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.config import DatasetContract, Paths, load_contract
from mlops_assets.lib import io
from mlops_assets.lib.governance.gate import GatePolicy
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.reporting.report_store import DEFAULT_URL as DEFAULT_REPORTS_URL
from mlops_assets.lib.reporting.report_store import ReportStore

# The Dask scheduler large training sets are fitted on (TrainingClusterResource).
TRAINING_SCHEDULER_ENV = "MLOPS_TRAINING_SCHEDULER"
# How often sensors look, in seconds (read when the code location loads): 30 by default;
# the replay sets MLOPS_SENSOR_INTERVAL lower.
SENSOR_INTERVAL = int(os.environ.get("MLOPS_SENSOR_INTERVAL", "30"))
# Whether the daily_monitoring schedule runs by default (read when the code location loads):
# yes, but not in a replay, which closes a window per month of the traffic it sends (a daily
# window over the same traffic would be monitored apart from the months).
DAILY_WINDOWS_ENV = "MLOPS_DAILY_WINDOWS"
DAILY_WINDOWS = os.environ.get(DAILY_WINDOWS_ENV, "1") != "0"

# Every arriving batch is one partition. Sensors add keys; nothing else does.
batches = dg.DynamicPartitionsDefinition(name="batches")
# Every file dropped in the scoring landing folder is one partition of batch_scores.
scoring_files = dg.DynamicPartitionsDefinition(name="scoring_files")


class ProjectResource(dg.ConfigurableResource):
    """Where the pipeline keeps its state, and which dataset contract it runs."""

    home: str
    contract_name: str = "bank"
    reports_url: str = DEFAULT_REPORTS_URL  # where `evidently ui` serves the reports

    def contract(self) -> DatasetContract:
        return load_contract(self.contract_name)

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    def registry(self) -> Registry:
        return Registry(self.home)

    def report_store(self) -> ReportStore:
        contract = self.contract()
        nullable = [name for name, spec in {**contract.categorical, **contract.numeric}.items()
                    if spec.nullable]
        return ReportStore(self.paths.evidently, self.reports_url, nullable)


class GateResource(dg.ConfigurableResource):
    """The promotion gate's thresholds (see lib/governance/gate.py): the contract's ``gate``
    section, each overridable here (launchpad or code); unset fields keep the contract's value."""

    min_auc: float | None = None
    auc_margin: float | None = None
    log_loss_margin: float | None = None
    recent_periods: int | None = None
    min_comparison_rows: int | None = None
    max_slice_gap: float | None = None
    max_slice_drop: float | None = None
    n_bootstrap: int | None = None
    bootstrap_rows: int | None = None

    def policy(self, contract: DatasetContract) -> GatePolicy:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return GatePolicy(**(contract.gate.model_dump() | overrides))


@contextmanager
def work_dir(project: ProjectResource, step: str) -> Iterator[Path]:
    """A scratch directory for a step that writes its output out of core, beside the IO
    manager's files (so that handing over a file is a rename); removed when the step ends,
    or by a later step if the step's process was killed."""
    with io.scratch_dir(project.paths.storage, step) as work:
        yield work


class ParquetIOManager(dg.ConfigurableIOManager):
    """Data frames as parquet (dicts as JSON), written atomically and never overwritten:
    every materialization under its own version, the run that made it. A partition goes to
    ``base_dir/<asset key>/<partition>/<run id>.parquet``, an unpartitioned asset to
    ``base_dir/<asset key>/<run id>.parquet``, so a later or concurrent run never changes
    what an earlier one wrote, judged or read. An input is read from the run that produced it
    in this run (or the run this one re-executes), else from the asset's (partition's)
    latest materialization. An asset reading many partitions gets a mapping ``{partition:
    frame}`` of the partitions that have a materialization, each pinned to the version that
    was latest when the input was loaded (or to a version the reader names). Old versions go
    only by the retention rule (defs/operations/storage.py)."""

    base_dir: str

    def _path(self, key: dg.AssetKey, name: str, suffix=".parquet",
              partition: str | None = None) -> Path:
        folder = Path(self.base_dir).joinpath(*key.path)
        return (folder if partition is None else folder / partition) / f"{name}{suffix}"

    def handle_output(self, context: dg.OutputContext,
                      obj: pd.DataFrame | dict | io.ParquetFile) -> None:
        if obj is None:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        key, run_id = context.asset_key, context.run_id
        if isinstance(obj, dict):
            io.write_json(self._path(key, run_id, ".json", partition), obj)
        elif isinstance(obj, io.ParquetFile):  # written out of core by the step
            io.move_into(self._path(key, run_id, partition=partition), obj.path)
        else:
            io.write_parquet(self._path(key, run_id, partition=partition), obj)

    def stored_path(self, key: dg.AssetKey, run_id: str, partition: str | None = None) -> Path:
        """The table one materialization (the run that wrote it) stored."""
        return self._path(key, run_id, partition=partition)

    def _exists(self, key: dg.AssetKey, name: str, partition: str | None = None) -> bool:
        return (self._path(key, name, ".json", partition).is_file()
                or self._path(key, name, partition=partition).is_file())

    def _read(self, key: dg.AssetKey, name: str, as_path: bool = False,
              partition: str | None = None) -> pd.DataFrame | dict | Path | None:
        json_path = self._path(key, name, ".json", partition)
        if json_path.is_file():
            return io.read_json(json_path)
        path = self._path(key, name, partition=partition)
        if not path.is_file():
            return None
        return path if as_path else io.read_parquet(path)

    def _read_latest(self, context: dg.InputContext,
                     partition: str | None = None) -> tuple[str | None, object]:
        """From the run that produced it in this run (or the run re-executed); an asset from
        an earlier run has no producing run here, and its latest materialization says which."""
        key = context.asset_key
        as_path = _wants_path(context)
        try:
            value = self._read(key, context.upstream_output.run_id, as_path, partition)
            if value is not None:
                return context.upstream_output.run_id, value
        except (AttributeError, dg.DagsterInvariantViolationError):
            pass
        run_id = (latest_partition_runs(context.instance, key, [partition]).get(partition)
                  if partition is not None else latest_run(context.instance, key))
        return (run_id, self._read(key, run_id, as_path, partition)) if run_id else (None, None)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict:
        key = context.asset_key
        if not context.has_asset_partitions:
            run_id, value = self._read_latest(context)
            if value is None and run_id is None and context.definition_metadata.get(
                    "optional"):
                return None  # never materialized, and the consumer can do without it
            if value is None:
                raise FileNotFoundError(
                    f"{key.to_user_string()} is not stored under {self.base_dir}"
                    + (f" for run {run_id}" if run_id else "") + ": materialize it first")
            return value
        if context.has_partition_key and context.asset_partition_keys == [
            context.partition_key
        ]:
            run_id, value = self._read_latest(context, context.partition_key)
            if value is None:
                raise FileNotFoundError(
                    f"{key.to_user_string()} partition {context.partition_key!r} is not "
                    f"stored under {self.base_dir}"
                    + (f" for run {run_id}" if run_id else "") + ": materialize it first")
            return value
        stored = StoredPartitions(self, key, latest_partition_runs(
            context.instance, key, context.asset_partition_keys))
        if len(stored) < len(context.asset_partition_keys):
            missing = sorted(set(context.asset_partition_keys) - set(stored))
            context.log.warning(f"{key.to_user_string()}: no stored data for {missing}")
        return stored


def _wants_path(context: dg.InputContext) -> bool:
    """A consumer that types its input as a Path gets the stored file: it reads the columns
    or the chunks it needs (out of core) instead of the whole table."""
    return context.dagster_type.typing_type is Path


def latest_run(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    event = instance.get_latest_materialization_event(key)
    return event.run_id if event else None


def latest_partition_runs(instance: dg.DagsterInstance, key: dg.AssetKey,
                          partitions) -> dict[str, str]:
    """The run of each partition's latest materialization (partitions never materialized are
    left out): the version a reader that names none gets."""
    latest = instance.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions))
    runs = materialization_runs(instance, key, list(latest.values()))
    return {p: runs[sid] for p, sid in latest.items() if sid in runs}


def materialization_runs(instance: dg.DagsterInstance, key: dg.AssetKey,
                         storage_ids: list[int]) -> dict[int, str]:
    """The run of each of ``key``'s materializations named by storage id."""
    out: dict[int, str] = {}
    for start in range(0, len(storage_ids), 500):
        ids = storage_ids[start:start + 500]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=ids), limit=len(ids)).records
        out.update({r.storage_id: r.run_id for r in records})
    return out


class StoredPartitions(Mapping):
    """The stored partitions of an asset, each pinned to one version (the run that wrote it)
    and read when it is looked up: a consumer that needs a few of many (a monitoring window of
    the prediction log's days) reads only those."""

    def __init__(self, manager: ParquetIOManager, key: dg.AssetKey, versions: dict[str, str]):
        self._manager, self._key = manager, key
        self.versions = {p: run for p, run in versions.items()
                         if manager._exists(key, run, p)}

    def __getitem__(self, partition: str) -> pd.DataFrame | dict:
        return self._manager._read(self._key, self.versions[partition], partition=partition)

    def path(self, partition: str, version: str | None = None) -> Path:
        """Where the partition's table is stored, for a consumer that reads it out of core:
        the pinned version, or ``version`` (the run of a materialization the consumer judged,
        which must be stored)."""
        run_id = version or self.versions[partition]
        path = self._manager._path(self._key, run_id, partition=partition)
        if not path.is_file():
            raise FileNotFoundError(
                f"{self._key.to_user_string()} partition {partition!r} of run {run_id} is not "
                f"stored at {path}")
        return path

    def __contains__(self, partition: object) -> bool:
        return partition in self.versions  # not Mapping's, which would read the partition

    def __iter__(self):
        return iter(self.versions)

    def __len__(self) -> int:
        return len(self.versions)


class TrainingClusterResource(dg.ConfigurableResource):
    """The Dask cluster a large training set is fitted on (lib/training/dask_training.py; when, is
    TrainingConfig.distributed_min_rows): a running scheduler's ``address``
    ($MLOPS_TRAINING_SCHEDULER, tcp://host:port), or by default a LocalCluster of
    ``local_workers`` worker processes on this machine, started for the fit. Not the
    production profile's step executor cluster: a step waiting on its own workers would
    deadlock them."""

    address: str | None = None
    local_workers: int = 2

    def spec(self):
        from mlops_assets.lib.training.dask_training import ClusterSpec

        return ClusterSpec(address=self.address or os.environ.get(TRAINING_SCHEDULER_ENV),
                           local_workers=self.local_workers)


class MonitoringResource(dg.ConfigurableResource):
    """Limits the monitoring checks hold each window to."""

    max_drift_share: float = 0.5  # Evidently's dataset-drift default
    min_labelled_rows: int = 100
    min_auc: float = 0.60
    min_f1: float = 0.20
    max_calibration_gap: float = 0.10
    max_latency_p99_ms: float = 250.0


class RetrainPolicyResource(dg.ConfigurableResource):
    """When the retraining sensor may launch (see lib/monitoring/retraining.py), and how the runs it
    launches train: search trials and the data window (latest N periods; None = all)."""

    cooldown_s: float = 3600.0
    min_new_rows: int = 5000
    trials: int = 20
    recent_periods: int | None = None

    # When a labelled window calls for recalibration or retraining: lib/retraining.LossPolicy,
    # the same defaults the backtest measured (docs/monitoring.md, Offline backtest).
    min_labelled: int = 150
    z: float = 2.0
    auc_tolerance: float = 0.03
    skill_tolerance: float = 0.05
    min_recalibration_gain: float = 0.005
    recalibration_z: float = 1.0
    max_drift_share: float = 0.5
    calibration_rows: int = 400

    def run_config(self, job: str = "retrain") -> dict:
        config = ({"recalibrate": True, "calibration_rows": self.calibration_rows}
                  if job == "recalibrate"
                  else {"n_trials": self.trials, "recent_periods": self.recent_periods})
        return {"ops": {"candidate_model": {"config": config}}}

    def policy(self):
        from mlops_assets.lib.monitoring.retraining import RetrainPolicy

        return RetrainPolicy(cooldown_s=self.cooldown_s, min_new_rows=self.min_new_rows)

    def rule(self):
        from mlops_assets.lib.monitoring.retraining import LossPolicy

        return LossPolicy(**{f: getattr(self, f) for f in LossPolicy.__dataclass_fields__})


def retrain_policy_from_env() -> RetrainPolicyResource:
    """Defaults, overridable by MLOPS_RETRAIN_COOLDOWN_S / _MIN_ROWS / _TRIALS (the replay
    uses them to compress months into minutes)."""
    env = os.environ
    default = RetrainPolicyResource()
    return RetrainPolicyResource(
        cooldown_s=float(env.get("MLOPS_RETRAIN_COOLDOWN_S", default.cooldown_s)),
        min_new_rows=int(env.get("MLOPS_RETRAIN_MIN_ROWS", default.min_new_rows)),
        trials=int(env.get("MLOPS_RETRAIN_TRIALS", default.trials)),
    )
