"""The console entry point: ``mlops-assets <verb>``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mlops_assets.config import PROJECT_ROOT, Paths, default_home, load_contract


def _setup(args) -> tuple[Path, str]:
    from mlops_assets.orchestration import ensure_dagster_home

    home = Path(args.home).resolve() if args.home else default_home()
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_CONTRACT"] = args.contract
    ensure_dagster_home(home / "dagster")
    return home, args.contract


def cmd_land(args) -> int:
    from mlops_assets.lib import data

    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    paths = data.land_batches(contract, Paths(home).landing, args.first, args.last)
    for p in paths:
        print(f"landed {p}")
    return 0


def cmd_demo(args) -> int:
    """Land the first periods, ingest them through the landing sensor's logic, and build the
    dataset, features and EDA report on the real instance under DAGSTER_HOME."""
    import dagster as dg

    from mlops_assets import orchestration
    from mlops_assets.definitions import build_definitions
    from mlops_assets.lib import data

    started = time.perf_counter()
    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    landed = data.land_batches(contract, Paths(home).landing, 0, args.periods)
    print(f"landed {len(landed)} batches of {contract.title} in {Paths(home).landing}")
    defs = build_definitions(str(home), contract_name)
    with dg.DagsterInstance.get() as instance:
        result = orchestration.tick_landing_sensor(defs, instance)
        outcomes = orchestration.run_requests(defs, instance, result)
        failed = [o.run_id for o in outcomes if not o.success]
        print(f"ingested {len(outcomes)} batches ({len(failed)} failed)")
        if result.skip_reason:
            print(f"sensor: {result.skip_reason.skip_message}")
        build = orchestration.run_job(defs, instance, "build_dataset", raise_on_error=False)
        _print_excluded(instance)
        print(f"dataset, features and EDA report: {'ok' if build.success else 'FAILED'}")
        if not build.success:
            print(f"  {orchestration.failure_message(build)}", file=sys.stderr)
            return 1
        run_config = {"ops": {"candidate_model": {"config": {"n_trials": args.trials}}}}
        train = orchestration.run_job(
            defs, instance, "train_and_promote", run_config=run_config, raise_on_error=False
        )
        from mlops_assets.lib.registry import Registry

        champion = Registry(home).champion()
        evaluation = train.output_for_node("model_evaluation") if train.success else None
        if evaluation:
            m = evaluation["metrics"]
            print(f"challenger {evaluation['tag']}: sealed-test AUC {m['roc_auc']:.4f}, "
                  f"log loss {m['log_loss']:.4f}, F1 {m['f1']:.4f}")
        print(f"train and promote: {'ok' if train.success else 'FAILED'}; champion: {champion}")
        if not train.success:
            print(f"  {orchestration.failure_message(train)}", file=sys.stderr)
    print(f"done in {time.perf_counter() - started:.1f} s; open the UI with: make ui")
    return 0 if train.success and not failed else 1


def _print_excluded(instance) -> None:
    from mlops_assets.defs.dataset.assets import batch_eligibility

    status = batch_eligibility(instance)
    for row in status[~status["included"]].itertuples():
        print(f"  batch {row.batch} excluded from the dataset: {row.reason}")


def cmd_batches(args) -> int:
    """Every landed batch: whether it reaches the dataset, and if not, why."""
    import dagster as dg

    from mlops_assets.defs.dataset.assets import batch_eligibility

    _setup(args)
    with dg.DagsterInstance.get() as instance:
        status = batch_eligibility(instance)
    if status.empty:
        print("no batches ingested yet: land files in the landing folder (mlops-assets land)")
        return 0
    print(status.to_markdown(index=False))
    excluded = int((~status["included"]).sum())
    print(f"\n{len(status) - excluded} included, {excluded} excluded")
    return 0


def cmd_rollback(args) -> int:
    """Run the rollback job on the instance, so the UI records the change."""
    import dagster as dg

    from mlops_assets import orchestration
    from mlops_assets.definitions import build_definitions

    home, contract_name = _setup(args)
    defs = build_definitions(str(home), contract_name)
    config = {"to": args.to, "reason": args.reason}
    with dg.DagsterInstance.get() as instance:
        result = orchestration.run_job(
            defs, instance, "rollback", quiet=True,
            run_config={"ops": {"rollback_champion": {"config": config}}}, raise_on_error=False,
        )
    if not result.success:
        print(f"rollback failed: {orchestration.failure_message(result)}", file=sys.stderr)
        return 1
    from mlops_assets.lib.registry import Registry

    event = Registry(home).history()[-1]
    print(f"champion: {event['previous']} -> {event['tag']}")
    return 0


def cmd_ui(args) -> int:
    home, _ = _setup(args)
    cmd = ["dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", args.host]
    if args.port:
        cmd += ["-p", str(args.port)]
    os.chdir(PROJECT_ROOT)
    os.execvp(cmd[0], cmd)
    return 0


def cmd_canary(args) -> int:
    """Run the set_canary job: a share of live traffic goes to this version (or none)."""
    import dagster as dg

    from mlops_assets import orchestration
    from mlops_assets.definitions import build_definitions
    from mlops_assets.lib.registry import CANARY, Registry

    home, contract_name = _setup(args)
    defs = build_definitions(str(home), contract_name)
    config = {"tag": None if args.clear else args.tag, "reason": args.reason}
    with dg.DagsterInstance.get() as instance:
        result = orchestration.run_job(
            defs, instance, "set_canary", quiet=True,
            run_config={"ops": {"set_canary_alias": {"config": config}}}, raise_on_error=False,
        )
    if not result.success:
        print(f"canary change failed: {orchestration.failure_message(result)}",
              file=sys.stderr)
        return 1
    print(f"canary: {Registry(home).alias(CANARY)}")
    return 0


def cmd_backtest(args) -> int:
    """Replay the periods after the first N offline for three retraining policies."""
    from mlops_assets.lib import backtest, io, training

    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    detail, summary = backtest.run(
        contract, args.initial_periods, training.TrainingSpec(n_trials=args.trials),
        backtest.TriggerPolicy(cooldown_periods=args.cooldown),
    )
    out = Path(args.out) if args.out else Paths(home).reports / "backtest"
    io.write_text(out / "summary.md", summary.round(4).to_markdown(index=False) + "\n")
    io.write_text(out / "periods.md", detail.round(4).to_markdown(index=False) + "\n")
    io.write_json(out / "backtest.json", {"summary": summary.to_dict("records"),
                                          "periods": detail.to_dict("records")})
    print(detail.round(3).to_markdown(index=False))
    print()
    print(summary.round(4).to_markdown(index=False))
    print(f"\nwritten to {out}")
    return 0


def cmd_simulate(args) -> int:
    """Replay the months after the first 12 against real servers; print the timeline."""
    from mlops_assets import replay
    from mlops_assets.lib import io
    from mlops_assets.lib.registry import Registry

    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    if Registry(home).champion() is None:
        print("no champion yet: running the demo first")
        if cmd_demo(argparse.Namespace(**{**vars(args), "periods": 12, "trials": 20})):
            return 1
    settings = replay.ReplaySettings(
        months=args.months, sensor_interval_s=args.sensor_interval,
        retrain_cooldown_s=args.cooldown, retrain_trials=args.trials,
    )
    timeline = replay.run(home, contract, settings)
    out = Paths(home).reports / "replay"
    io.write_text(out / "timeline.md", timeline.round(4).to_markdown(index=False) + "\n")
    io.write_json(out / "timeline.json", timeline.to_dict("records"))
    print(timeline.round(3).to_markdown(index=False))
    print(f"\nwritten to {out / 'timeline.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__)
    parser.add_argument("--home", help="project home (default: $MLOPS_HOME or ./var)")
    parser.add_argument("--contract", default=os.environ.get("MLOPS_CONTRACT", "bank"),
                        help="dataset contract: bundled name or YAML path (default: bank)")
    sub = parser.add_subparsers(dest="verb", required=True)
    demo = sub.add_parser("demo", help="land the first periods and run the pipeline on them")
    demo.add_argument("--periods", type=int, default=12, help="how many periods to land")
    demo.add_argument("--trials", type=int, default=20, help="hyperparameter search trials")
    demo.set_defaults(func=cmd_demo)
    rb = sub.add_parser("rollback", help="set the champion back to the previous or a named one")
    rb.add_argument("--to", default=None, help="model tag (default: the previous champion)")
    rb.add_argument("--reason", default="manual rollback (CLI)")
    rb.set_defaults(func=cmd_rollback)
    bl = sub.add_parser("batches", help="which landed batches reach the dataset, and why not")
    bl.set_defaults(func=cmd_batches)
    canary = sub.add_parser("canary", help="send a share of traffic to a model version")
    which = canary.add_mutually_exclusive_group(required=True)
    which.add_argument("--tag", help="model tag to serve as the canary")
    which.add_argument("--clear", action="store_true", help="stop the canary")
    canary.add_argument("--reason", default="manual canary change (CLI)")
    canary.set_defaults(func=cmd_canary)
    land = sub.add_parser("land", help="land batches of the bundled dataset (by position)")
    land.add_argument("--first", type=int, default=0)
    land.add_argument("--last", type=int, default=None)
    land.set_defaults(func=cmd_land)
    sim = sub.add_parser("simulate", help="replay later months against bentoml serve and "
                         "the Dagster daemon")
    sim.add_argument("--months", type=int, default=14)
    sim.add_argument("--trials", type=int, default=5, help="search trials per retraining")
    sim.add_argument("--cooldown", type=float, default=0.0, help="retraining cooldown, s")
    sim.add_argument("--sensor-interval", type=int, default=5, help="sensor interval, s")
    sim.set_defaults(func=cmd_simulate)
    bt = sub.add_parser("backtest", help="offline replay of retraining policies")
    bt.add_argument("--initial-periods", type=int, default=12)
    bt.add_argument("--trials", type=int, default=3, help="search trials per (re)training")
    bt.add_argument("--cooldown", type=int, default=3, help="periods between triggered retrains")
    bt.add_argument("--out", default=None, help="output folder (default: reports/backtest)")
    bt.set_defaults(func=cmd_backtest)
    ui = sub.add_parser("ui", help="start `dagster dev` on this project's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=None)
    ui.set_defaults(func=cmd_ui)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
