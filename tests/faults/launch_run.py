"""Launch `train_and_promote` through the instance's run launcher, as the CLI and the UI do
(a code server, a run worker), and wait for it; print the run id first. Used by the fault
tests to have a real launcher, code server and run worker to kill."""

import sys

import dagster as dg

from mlops_assets import orchestration

if __name__ == "__main__":
    trials = int(sys.argv[1])
    config = {"ops": {"candidate_model": {"config": {"n_trials": trials, "seed": 1}}}}
    with dg.DagsterInstance.get() as instance, orchestration.Launcher(instance) as launcher:
        run_id = launcher.launch("train_and_promote", run_config=config)
        print(run_id, flush=True)
        outcome = launcher.wait(run_id)
        print("ok" if outcome.success else outcome.failure(), flush=True)
