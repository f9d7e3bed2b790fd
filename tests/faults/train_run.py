"""Run `train_and_promote` in this process on a project home, as the CLI does; print the run
id. Used by the fault tests to have real, separate processes to run at once or kill."""

import sys

import dagster as dg

from mlops_assets import orchestration
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.resources import GateResource

if __name__ == "__main__":
    home, seed, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    defs = build_definitions(home, "bank", GateResource(min_auc=0.6))
    config = {"ops": {"candidate_model": {"config": {"n_trials": trials, "seed": seed}}}}
    with dg.DagsterInstance.get() as instance:
        result = orchestration.run_job(defs, instance, "train_and_promote", quiet=True,
                                       run_config=config, raise_on_error=False)
        print(result.run_id, "ok" if result.success
              else orchestration.run_failure(instance, result.run_id))
