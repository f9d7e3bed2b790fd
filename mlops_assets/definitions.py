"""The code location: each lifecycle stage's definitions (``defs/<stage>/__init__.py``)
merged, every asset catalogued (owner, stage tag, code version, source link), plus the global
resources and the executor."""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings

import dagster as dg

from mlops_assets.config import Paths, default_home
from mlops_assets.defs import (
    dataset,
    deployment,
    features,
    governance,
    ingestion,
    monitoring,
    operations,
    patches,
    scoring,
    training,
)
from mlops_assets.defs.resources import (
    GateResource,
    MonitoringResource,
    ParquetIOManager,
    ProjectResource,
    RetrainPolicyResource,
    TrainingClusterResource,
)
from mlops_assets.lib.reporting.report_store import reports_url

# Every process that executes steps loads this module: its pool claims are then race-free.
patches.guard_pool_claims()

STAGES = (ingestion, dataset, features, training, governance, deployment, monitoring, scoring,
          operations)
OWNERS = ["team:mlops"]


def _catalogued(assets: list) -> list:
    """What Dagster users look for on every asset: an owner, its lifecycle stage as a tag, a
    code version (a hash of the asset function's own source, so the UI marks what a code
    change made stale) and references to its source code."""
    versions = {}
    for asset in assets:
        if isinstance(asset, dg.AssetsDefinition):
            source = inspect.getsource(asset.op.compute_fn.decorated_fn)
            versions |= dict.fromkeys(asset.keys, hashlib.sha256(source.encode()).hexdigest()[:12])

    def spec(s: dg.AssetSpec) -> dg.AssetSpec:
        return s.replace_attributes(
            owners=OWNERS, tags={**s.tags, "lifecycle": s.group_name or "default"},
            code_version=versions.get(s.key, s.code_version))

    with warnings.catch_warnings():  # beta APIs, stable for what they are used for here
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.with_source_code_references(dg.map_asset_specs(spec, assets))


def _retrain_policy_from_env() -> RetrainPolicyResource:
    """Defaults, overridable by MLOPS_RETRAIN_COOLDOWN_S / _MIN_ROWS / _TRIALS (the replay
    uses them to compress months into minutes)."""
    env = os.environ
    default = RetrainPolicyResource()
    return RetrainPolicyResource(
        cooldown_s=float(env.get("MLOPS_RETRAIN_COOLDOWN_S", default.cooldown_s)),
        min_new_rows=int(env.get("MLOPS_RETRAIN_MIN_ROWS", default.min_new_rows)),
        trials=int(env.get("MLOPS_RETRAIN_TRIALS", default.trials)),
    )


EXECUTOR_ENV = "MLOPS_EXECUTOR"
SCHEDULER_ENV = "MLOPS_DASK_SCHEDULER"
STORAGE_ENV = "MLOPS_STORAGE_DIR"


def executor_from_env() -> dg.ExecutorDefinition:
    """Where a run's steps execute, a switch rather than a fork of the jobs.
    ``in_process`` (the default, embedded): in the run's own process, one after another.
    ``dask`` (the production profile): each step a task on the Dask cluster whose scheduler
    is at $MLOPS_DASK_SCHEDULER; its workers load this same code location, and read and write
    step outputs through the IO manager's base folder ($MLOPS_STORAGE_DIR), which all of them
    must see (one machine's disk here, a shared volume across machines)."""
    kind = os.environ.get(EXECUTOR_ENV, "in_process")
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "dask":
        address = os.environ.get(SCHEDULER_ENV)
        if not address:
            raise ValueError(f"{EXECUTOR_ENV}=dask needs {SCHEDULER_ENV}, the Dask scheduler's "
                             "address (tcp://host:port)")
        from mlops_assets.platform.cluster import dask_executor

        return dask_executor(address)
    raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected 'in_process' or 'dask'")


def build_definitions(
    home: str | None = None,
    contract: str | None = None,
    gate: GateResource | None = None,
    monitor: MonitoringResource | None = None,
    retrain_policy: RetrainPolicyResource | None = None,
) -> dg.Definitions:
    """Definitions for a project home and dataset contract (defaults: $MLOPS_HOME or ./var,
    and $MLOPS_CONTRACT or bank) and gate thresholds (defaults in lib/governance/gate.py)."""
    home = str(home or default_home())
    contract = contract or os.environ.get("MLOPS_CONTRACT", "bank")
    stages = dg.Definitions.merge(*(stage.defs for stage in STAGES))
    return dg.Definitions(
        assets=_catalogued(list(stages.assets)),
        asset_checks=stages.asset_checks,
        jobs=stages.jobs,
        sensors=stages.sensors,
        schedules=stages.schedules,
        resources={
            "project": ProjectResource(home=home, contract_name=contract,
                                       reports_url=reports_url()),
            "io_manager": ParquetIOManager(
                base_dir=os.environ.get(STORAGE_ENV) or str(Paths(home).storage)),
            "gate_policy": gate or GateResource(),
            "monitor": monitor or MonitoringResource(),
            "retrain_policy": retrain_policy or _retrain_policy_from_env(),
            "training_cluster": TrainingClusterResource(),
        },
        executor=executor_from_env(),
    )


def job_for(name: str, home: str, contract: str, gate: dict | None = None) -> dg.JobDefinition:
    """Job ``name`` of the definitions for ``home`` and ``contract`` (``gate``: GateResource
    fields): the function ``reconstructable_job`` points at, called again by every process
    that executes one of the run's steps."""
    defs = build_definitions(home, contract, GateResource(**gate) if gate else None)
    return defs.resolve_job_def(name)


def reconstructable_job(name: str, home: str, contract: str, gate: dict | None = None):
    """Job ``name`` for ``dg.execute_job``: a run outside a code location whose steps may run
    in other processes (the Dask executor's workers rebuild the job from this pointer, with
    the executor that $MLOPS_EXECUTOR names in their environment)."""
    return dg.build_reconstructable_job(
        __name__, job_for.__name__, (name, str(home), contract), {"gate": gate} if gate else None)


defs = build_definitions()
