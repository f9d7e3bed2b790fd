"""The code location: each lifecycle stage's definitions (``defs/<stage>/__init__.py``)
merged, every asset catalogued (owner, stage tag, code version, source link), plus the global
resources and the executor."""

from __future__ import annotations

import os

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
from mlops_assets.defs.metadata import catalogued
from mlops_assets.defs.resources import (
    GateResource,
    MonitoringResource,
    ParquetIOManager,
    ProjectResource,
    RetrainPolicyResource,
    TrainingClusterResource,
    retrain_policy_from_env,
)
from mlops_assets.lib.reporting.report_store import reports_url
from mlops_assets.platform.cluster import executor_from_env

# Every process that executes steps loads this module: its pool claims are then race-free.
patches.guard_pool_claims()
# A code server loads it too: it forks its runs from a process with this module loaded.
patches.fork_runs_from_preloaded_server()

STAGES = (ingestion, dataset, features, training, governance, deployment, monitoring, scoring,
          operations)
STORAGE_ENV = "MLOPS_STORAGE_DIR"  # the IO manager's base folder (production profile)


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
        assets=catalogued(list(stages.assets)),
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
            "retrain_policy": retrain_policy or retrain_policy_from_env(),
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
