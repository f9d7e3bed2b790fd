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
    contract = args.contract
    if Path(contract).suffix:  # a path: child processes run in the project root
        contract = str(Path(contract).resolve())
    load_contract(contract)  # a bad contract stops here, with what to fix
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_CONTRACT"] = contract
    ensure_dagster_home(home / "dagster")
    return home, contract


def cmd_land(args) -> int:
    from mlops_assets.lib.dataset import data

    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    paths = data.land_batches(contract, Paths(home).landing, args.first, args.last)
    paths += data.land_labels(contract, Paths(home).home / "feedback")
    for p in paths:
        print(f"landed {p}")
    return 0


def cmd_demo(args) -> int:
    """Land the first periods; the landing sensor (dagster-daemon) ingests them; then build
    the dataset and train, evaluate, gate and promote: every run launched through the
    instance, so each shows in the UI on its job's page."""
    import dagster as dg

    from mlops_assets import orchestration
    from mlops_assets.lib.dataset import data

    started = time.perf_counter()
    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    batches = data.source_batches(contract)
    if len(batches) < 2:
        print(f"contract {contract.name!r}: the source has {len(batches)} period(s) by "
              f"{contract.period.kind} {contract.period.column or ''}: at least 2 are needed "
              "(change `period` in the contract)", file=sys.stderr)
        return 2
    landed = data.land_batches(contract, Paths(home).landing, 0, args.periods)
    print(f"landed {len(landed)} of {len(batches)} batches of {contract.title} in "
          f"{Paths(home).landing}")
    label_files = data.land_labels(contract, Paths(home).home / "feedback")
    if label_files:
        print(f"delivered {len(label_files)} label file(s) to {label_files[0].parent}")
    os.environ.setdefault("MLOPS_SENSOR_INTERVAL", "3")  # for a daemon this command starts
    # One code server for every run of the demo; a daemon (this command's own, unless one
    # runs already) only while the sensor ingests.
    with dg.DagsterInstance.get() as instance, \
            orchestration.Launcher(instance, daemon=True) as launcher:
        print("the landing sensor ingests them (runs: ingest_batch) ...", flush=True)
        runs = orchestration.wait_for_ingestion(instance, landed, print)
        launcher.release_daemon()
        failed = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
        print(f"ingested {len(landed)} batches ({len(failed)} failed)")
        for run in failed:
            print(f"  {run.tags.get('dagster/partition', run.run_id)}: "
                  f"{orchestration.run_failure(instance, run.run_id)}", file=sys.stderr)
        _print_excluded(instance)
        if label_files:
            labels = launcher.run("ingest_feedback")
            if not labels.success:
                return _failed("reading the label files (ingest_feedback)", labels)
        build = launcher.run("build_dataset")
        print(f"dataset, features and EDA report: {'ok' if build.success else 'FAILED'}")
        if not build.success:
            return _failed("build_dataset", build)
        trials = args.trials or contract.training.n_trials
        config = {"ops": {"candidate_model": {"config": {"n_trials": trials}}}}
        train = launcher.run("train_and_promote", run_config=config)
        from mlops_assets.lib.governance.registry import Registry

        champion = Registry(home).champion()
        m = train.materialization("model_evaluation")
        if m:
            print(f"challenger {m['bentoml_tag']}: sealed-test AUC {m['roc_auc']:.4f}, "
                  f"log loss {m['log_loss']:.4f}, F1 {m['f1']:.4f}")
        bento = train.materialization("bento")
        promoted = train.materialization("champion")
        print(f"train and promote: {'ok' if train.success else 'FAILED'}; champion: {champion}"
              + (f"; Bento {bento['bento_tag']}" if bento else ""))
        if not train.success:
            if promoted and not bento:
                print(f"  the champion moved to {champion}, but its Bento was not built: "
                      "`bentoml serve` from this project (registry mode) serves it already; "
                      "materialize `bento` from the UI once the cause is fixed",
                      file=sys.stderr)
            return _failed("train_and_promote", train)
    print(f"done in {time.perf_counter() - started:.1f} s; open the UI with: make ui")
    return 0 if not failed else 1


def _failed(what: str, outcome) -> int:
    """The last lines a failed command prints: what failed and why."""
    print(f"FAILED: {what}: {outcome.failure()}\n  (run {outcome.run_id}; its events are in "
          "the Dagster UI)", file=sys.stderr)
    return 1


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


def cmd_models(args) -> int:
    """The registry at a glance, newest first (--json for scripts)."""
    import json

    import pandas as pd

    from mlops_assets.lib.governance.registry import Registry

    home = Path(args.home).resolve() if args.home else default_home()
    if not home.is_dir():  # a look never creates a home
        print(f"no project home at {home}: run the pipeline first (mlops-assets demo)")
        return 0
    rows = Registry(home).overview()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no model versions yet: run the pipeline first (mlops-assets demo)")
        return 0
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f", missingval=""))
    return 0


def cmd_rollback(args) -> int:
    """Run the rollback job through the instance, so the UI records the change."""
    home, _ = _setup(args)
    if not _launch("rollback", "rollback_champion", {"to": args.to, "reason": args.reason},
                   "rollback"):
        return 1
    from mlops_assets.lib.governance.registry import Registry

    event = Registry(home).history()[-1]
    print(f"champion: {event['previous']} -> {event['tag']}")
    return 0


def cmd_gc(args) -> int:
    """Run the collect_storage job: delete stored versions nothing refers to any more."""
    _setup(args)
    config = {"grace_hours": args.grace_hours, "dry_run": args.dry_run}
    return 0 if _launch("collect_storage", "collect_stored_versions", config, "gc") else 1


def _launch(job: str, op: str, config: dict, what: str) -> bool:
    """Run ``job`` (its ``op`` given ``config``) through the instance, so the UI records it;
    on failure, one line on stderr saying ``what`` failed and why."""
    import dagster as dg

    from mlops_assets import orchestration

    # Its run needs the code location only (not LightGBM or Evidently): it starts ~6 s sooner.
    with (dg.DagsterInstance.get() as instance,
          orchestration.Launcher(instance, preload=("mlops_assets.definitions",)) as launcher):
        result = launcher.run(job, run_config={"ops": {op: {"config": config}}})
    if not result.success:
        print(f"{what} failed: {result.failure()}", file=sys.stderr)
    return result.success


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _redirect_old_links(store, host: str, reports_port: int, logs: Path) -> list:
    """A redirect (mlops_assets/platform/redirect.py) on every other local port that reports' links
    were made with, to the port the reports UI runs on now, so every link in the Dagster UI
    opens whichever port the reports UI was started on, then or later."""
    from urllib.parse import urlsplit

    from mlops_assets.platform.procs import start

    started = []
    for base in store.link_bases():
        old = urlsplit(base)
        if old.hostname not in ("127.0.0.1", "localhost", host) or old.port in (None,
                                                                                reports_port):
            continue
        if _port_in_use(host, old.port):
            print(f"note: reports linked at {base} will not open: port {old.port} is in use",
                  file=sys.stderr)
            continue
        started.append(start([sys.executable, "-m", "mlops_assets.platform.redirect", host,
                              str(old.port), f"http://{host}:{reports_port}"],
                             logs / f"redirect-{old.port}.log", {}, PROJECT_ROOT))
    return started


def cmd_ui(args) -> int:
    """The Dagster UI (`dagster dev`: webserver + daemon) and the Evidently UI that serves the
    reports, both on 127.0.0.1, started with this interpreter's own executables (nothing needs
    to be on PATH) and stopped together by their PIDs."""
    import signal

    from mlops_assets.lib.reporting.report_store import ReportStore
    from mlops_assets.platform.procs import start, stop_all, wait_http

    busy = [p for p in dict.fromkeys((args.port, args.reports_port))
            if _port_in_use(args.host, p)]
    if busy:  # another UI (or anything) is there: start nothing, not even a second daemon
        print(f"error: port {' and '.join(map(str, busy))} on {args.host} is in use (is "
              "another `mlops-assets ui` running?); stop it, or choose another with --port / "
              "--reports-port", file=sys.stderr)
        return 2
    home, _ = _setup(args)
    bin_dir = Path(sys.executable).parent
    reports_url = f"http://{args.host}:{args.reports_port}"
    evidently_root = Paths(home).evidently
    ReportStore(evidently_root, reports_url).ensure_workspace()
    # The reports' links and the alerts' links point at the ports this UI runs on.
    env = {"MLOPS_REPORTS_URL": reports_url, "MLOPS_UI_URL": f"http://{args.host}:{args.port}"}
    logs = Paths(home).reports / "ui"
    procs = []
    signal.signal(signal.SIGTERM, _interrupt)  # stopped by PID: stop the children too
    try:
        reports = start([str(bin_dir / "evidently"), "ui", "--workspace", str(evidently_root),
                         "--host", args.host, "--port", str(args.reports_port)],
                        logs / "evidently.log", env, PROJECT_ROOT)
        procs.append(reports)
        # Started in DAGSTER_HOME, where the instance's dagster.yaml is (a link to the repo's).
        dagster = start([str(bin_dir / "dagster"), "dev", "-w",
                         str(PROJECT_ROOT / "workspace.yaml"), "-h", args.host, "-p",
                         str(args.port)], logs / "dagster.log", env, home / "dagster")
        procs.append(dagster)
        wait_http(f"http://{args.host}:{args.port}/server_info", 180, dagster,
                  logs / "dagster.log")
        wait_http(f"{reports_url}/api/version", 60, reports, logs / "evidently.log")
        # Once both hold their ports: a redirect never takes the Dagster UI's.
        procs += _redirect_old_links(ReportStore(evidently_root, reports_url), args.host,
                                     args.reports_port, logs)
        print(f"Dagster UI:    http://{args.host}:{args.port}")
        print(f"Reports (Evidently UI): {reports_url}")
        print(f"logs: {logs}; stop with Ctrl-C", flush=True)
        while dagster.poll() is None and reports.poll() is None:
            time.sleep(0.5)
        failed = dagster if dagster.poll() is not None else reports
        print(f"{failed.args[0]} exited with {failed.returncode}; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # Both at once, within the grace a supervisor gives this process after its SIGTERM:
        # one after the other, `dagster dev`'s slow stop left the Evidently UI running.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(procs, grace=8)


def cmd_production(args) -> int:
    """The production profile on this machine: PostgreSQL (instance storage), a Dask
    scheduler and workers (the steps' executor), a gRPC code server, dagster-webserver and
    dagster-daemon as separate processes on one instance, all bound to 127.0.0.1, stopped
    together by their PIDs (Ctrl-C or SIGTERM)."""
    import signal

    import yaml

    from mlops_assets import orchestration
    from mlops_assets.lib import io
    from mlops_assets.platform import cluster, postgres
    from mlops_assets.platform.cluster import EXECUTOR_ENV, SCHEDULER_ENV
    from mlops_assets.platform.procs import free_port, start, stop_all, wait_http

    home = Path(args.home).resolve() if args.home else default_home()
    logs = Paths(home).reports / "production"
    postgres.init_cluster(home / "postgres")
    db, url = postgres.start_server(home / "postgres", args.pg_port or free_port(),
                                    logs / "postgres.log")
    procs = [db]
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        os.environ[postgres.URL_ENV] = url
        home, _ = _setup(args)  # DAGSTER_HOME's dagster.yaml now stores in PostgreSQL
        bin_dir = Path(sys.executable).parent
        os.environ[EXECUTOR_ENV] = args.executor
        if args.executor == "dask":  # every process below, workers too, loads this setting
            scheduler, address = cluster.start_scheduler(logs / "dask-scheduler.log",
                                                         PROJECT_ROOT)
            procs.append(scheduler)
            os.environ[SCHEDULER_ENV] = address
            procs.append(cluster.start_workers(address, args.workers, logs / "dask-workers.log",
                                               {}, PROJECT_ROOT))
            cluster.wait_for_workers(address, args.workers, procs, logs / "dask-workers.log")
        os.environ.setdefault("MLOPS_UI_URL", f"http://127.0.0.1:{args.port}")  # alert links
        grpc_port = free_port()
        workspace = home / "dagster" / orchestration.GRPC_WORKSPACE
        io.write_text(workspace, yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": grpc_port, "location_name": "mlops_assets"}}]}))
        procs.append(start([str(bin_dir / "dagster"), "code-server", "start", "-m",
                            "mlops_assets.definitions", "-a", "defs", "-h", "127.0.0.1",
                            "-p", str(grpc_port)], logs / "code-server.log", {}, PROJECT_ROOT))
        web = start([str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h",
                     "127.0.0.1", "-p", str(args.port)], logs / "webserver.log", {},
                    home / "dagster")
        procs.append(web)
        procs.append(start([str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
                           logs / "daemon.log", {}, home / "dagster"))
        wait_http(f"http://127.0.0.1:{args.port}/server_info", 180, web,
                  logs / "webserver.log")
        print(f"PostgreSQL:  {url} (export {postgres.URL_ENV}=... for the CLI)")
        if args.executor == "dask":
            print(f"Dask:        {os.environ[SCHEDULER_ENV]} ({args.workers} workers)")
        print(f"code server: 127.0.0.1:{grpc_port} ({workspace})")
        print(f"Dagster UI:  http://127.0.0.1:{args.port}")
        print(f"logs: {logs}; stop with Ctrl-C", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        print(f"{dead.args[0]} exited with {dead.returncode}; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        (home / "dagster" / orchestration.GRPC_WORKSPACE).unlink(missing_ok=True)
        # The services first, PostgreSQL last (they write to it as they stop); all within
        # the 20 s a caller's stop() grants this process.
        stop_all([p for p in procs if p is not db], grace=10)
        stop_all([db], grace=5)


def cmd_alias(args) -> int:
    """Run the set_canary or set_shadow job: point that alias at a version (or clear it)."""
    from mlops_assets.lib.governance.registry import Registry

    home, _ = _setup(args)
    alias = args.alias
    config = {"tag": None if args.clear else args.tag, "reason": args.reason}
    if not _launch(f"set_{alias}", f"set_{alias}_alias", config, f"{alias} change"):
        return 1
    print(f"{alias}: {Registry(home).alias(alias)}")
    return 0


def cmd_backtest(args) -> int:
    """Replay the periods after the first N offline for each retraining policy."""
    from mlops_assets.lib import io
    from mlops_assets.lib.monitoring import backtest
    from mlops_assets.lib.training import search

    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    detail, summary = backtest.run(
        contract, args.initial_periods, search.spec_for(contract, n_trials=args.trials),
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
    from mlops_assets.lib.governance.registry import Registry

    home, contract_name = _setup(args)
    contract = load_contract(contract_name)
    if Registry(home).champion() is None:
        print("no champion yet: running the demo first")
        if cmd_demo(argparse.Namespace(**{**vars(args), "periods": 12,
                                          "trials": args.demo_trials})):
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


def cmd_contract_init(args) -> int:
    """Infer a starter contract from a data file and say what to review."""
    from mlops_assets.lib.dataset import contract_init, data

    data_file = Path(args.data_file)
    out = Path(args.out) if args.out else data_file.resolve().parent / (
        contract_init.dataset_name(data_file) + ".yaml")
    if out.exists() and not args.force:
        print(f"error: {out} exists (keep your edits: --out elsewhere, or --force)",
              file=sys.stderr)
        return 2
    inferred = contract_init.infer(data_file, args.target, args.period, args.frequency,
                                   Path(args.labels) if args.labels else None, args.key,
                                   out.resolve().parent)
    contract = contract_init.write(inferred, out)
    batches = data.source_batches(contract)
    print(f"wrote {out}: {len(contract.categorical)} categorical and {len(contract.numeric)} "
          f"numeric features, {len(batches)} periods ({next(iter(batches))} to "
          f"{list(batches)[-1]})")
    print("check:")
    for line in inferred.review:
        print(f"  - {line}")
    print(f"then run it: mlops-assets --contract {out} demo")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__)
    parser.add_argument("--home", help="project home (default: $MLOPS_HOME or ./var)")
    parser.add_argument("--contract", default=os.environ.get("MLOPS_CONTRACT", "bank"),
                        help="dataset contract: bundled name or YAML path (default: bank)")
    sub = parser.add_subparsers(dest="verb", required=True)
    demo = sub.add_parser("demo", help="land the first periods and run the pipeline on them")
    demo.add_argument("--periods", type=int, default=12, help="how many periods to land")
    demo.add_argument("--trials", type=int, default=None,
                      help="hyperparameter search trials (default: the contract's, 20)")
    demo.set_defaults(func=cmd_demo)
    rb = sub.add_parser("rollback", help="set the champion back to the previous or a named one")
    rb.add_argument("--to", default=None, help="model tag (default: the previous champion)")
    rb.add_argument("--reason", default="manual rollback (CLI)")
    rb.set_defaults(func=cmd_rollback)
    models = sub.add_parser("models", help="the model registry at a glance: versions, "
                            "aliases, data, sealed-test metrics, Bentos")
    models.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    models.set_defaults(func=cmd_models)
    bl = sub.add_parser("batches", help="which landed batches reach the dataset, and why not")
    bl.set_defaults(func=cmd_batches)
    for alias, what in (("canary", "send a share of traffic to a model version"),
                        ("shadow", "score traffic with a model version too, never answered")):
        verb = sub.add_parser(alias, help=what)
        which = verb.add_mutually_exclusive_group(required=True)
        which.add_argument("--tag", help=f"model tag to serve as the {alias}")
        which.add_argument("--clear", action="store_true", help=f"stop the {alias}")
        verb.add_argument("--reason", default=f"manual {alias} change (CLI)")
        verb.set_defaults(func=cmd_alias, alias=alias)
    land = sub.add_parser("land", help="land batches of the bundled dataset (by position)")
    land.add_argument("--first", type=int, default=0)
    land.add_argument("--last", type=int, default=None)
    land.set_defaults(func=cmd_land)
    sim = sub.add_parser("simulate", help="replay later months against bentoml serve and "
                         "the Dagster daemon")
    sim.add_argument("--months", type=int, default=14)
    sim.add_argument("--trials", type=int, default=5, help="search trials per retraining")
    sim.add_argument("--demo-trials", type=int, default=None,
                     help="search trials of the first champion if there is none yet "
                          "(default: the contract's, 20)")
    sim.add_argument("--cooldown", type=float, default=0.0, help="retraining cooldown, s")
    sim.add_argument("--sensor-interval", type=int, default=5, help="sensor interval, s")
    sim.set_defaults(func=cmd_simulate)
    bt = sub.add_parser("backtest", help="offline replay of retraining policies")
    bt.add_argument("--initial-periods", type=int, default=12)
    bt.add_argument("--trials", type=int, default=3, help="search trials per (re)training")
    bt.add_argument("--cooldown", type=int, default=3, help="periods between triggered retrains")
    bt.add_argument("--out", default=None, help="output folder (default: reports/backtest)")
    bt.set_defaults(func=cmd_backtest)
    prod = sub.add_parser("production", help="the production profile: PostgreSQL, Dask "
                          "workers, a gRPC code server, webserver and daemon as separate "
                          "processes")
    prod.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    prod.add_argument("--pg-port", type=int, default=None, help="PostgreSQL port (free one)")
    prod.add_argument("--executor", choices=["dask", "in_process"], default="dask",
                      help="where steps run: Dask workers (default) or each run's process")
    prod.add_argument("--workers", type=int, default=2, help="Dask worker processes (2)")
    prod.set_defaults(func=cmd_production)
    contract = sub.add_parser("contract", help="write a dataset contract")
    contract_sub = contract.add_subparsers(dest="contract_verb", required=True)
    init = contract_sub.add_parser("init", help="infer a starter contract from a data file")
    init.add_argument("data_file", help="CSV/TSV (separator sniffed) or Parquet file")
    init.add_argument("--target", required=True, help="the label column (binary)")
    init.add_argument("--period", default=None,
                      help="a date, datetime, year or integer column that orders the rows")
    init.add_argument("--frequency", default=None,
                      choices=["year", "quarter", "month", "week", "day"],
                      help="how to group a date period column (default month)")
    init.add_argument("--labels", default=None, help="a separate file with the labels")
    init.add_argument("--key", default=None, help="the row id column the labels join on")
    init.add_argument("--out", default=None,
                      help="where to write the YAML (default: <data file's folder>/<name>.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.set_defaults(func=cmd_contract_init)
    gc = sub.add_parser("gc", help="delete stored versions nothing refers to any more")
    gc.add_argument("--grace-hours", type=float, default=24.0,
                    help="keep versions superseded less than this long ago (24)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would go")
    gc.set_defaults(func=cmd_gc)
    ui = sub.add_parser("ui", help="the Dagster UI and the reports' Evidently UI on this "
                        "project's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    ui.add_argument("--reports-port", type=int, default=8000,
                    help="Evidently UI port for the reports (default 8000)")
    ui.set_defaults(func=cmd_ui)
    args = parser.parse_args(argv)
    from mlops_assets.config import ContractError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: `mlops-assets {args.verb}` stopped; run it again to finish what "
              "was interrupted", file=sys.stderr)
        return 130
    except (ContractError, FileNotFoundError, ValueError) as err:  # bad input: no trace
        if os.environ.get("MLOPS_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the machine's fault (a full disk, a database gone): one line
        cause = _environment_cause(err)
        if cause is None or os.environ.get("MLOPS_DEBUG"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 1


def _environment_cause(err: BaseException) -> str | None:
    """A one-line cause for an error of the machine rather than of the code: a disk that is
    full or failing, storage that cannot be written or reached. None for anything else."""
    import errno

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO,
                                                      errno.EROFS):
            where = f" ({err.filename})" if err.filename else ""
            return f"{os.strerror(err.errno)}{where}: free space or fix the disk, then retry"
        if type(err).__name__ == "OperationalError":  # SQLAlchemy / sqlite3 / psycopg2
            home = os.environ.get("DAGSTER_HOME", "DAGSTER_HOME")
            hint = (" (is the disk full? df -h " + home + ")" if any(
                t in text.lower() for t in ("disk", "full", "i/o")) else "")
            return f"the Dagster instance in {home} cannot be used: {text}{hint}"
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
