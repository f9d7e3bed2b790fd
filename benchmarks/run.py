"""All benchmarks, side by side in one run; medians of repeated runs; JSON + a table.

    python -m benchmarks.run            # full: about 25 minutes on 2 cores
    python -m benchmarks.run --quick    # CI: every benchmark once, small, finite numbers only
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import loadgen
from mlops_assets.config import PROJECT_ROOT, TARGET, load_contract
from mlops_assets.lib import io
from mlops_assets.lib.dataset import data, features, split
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.monitoring import drift
from mlops_assets.lib.serving import scoring
from mlops_assets.lib.training import search
from mlops_assets.platform.procs import free_port, server

CONTRACT = load_contract("bank")


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its child processes that have ended
    (a stage's run processes, a LocalCluster's workers): what a stage costs the machine,
    whatever else runs on it."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class PeakRSS:
    """Peak resident memory of this process and its child processes (a LocalCluster's
    workers) while the block runs, sampled every 20 ms, and the CPU time the block took
    (``cpu_s``: its processes must have ended by its end). The block starts from what this
    process still holds: memory earlier blocks freed is handed back first (in production
    each job runs in a new process; here the pipeline's jobs run one after another in this
    one, and the training stage started from the dataset stage's freed-but-kept 600 MB)."""

    def __enter__(self):
        import psutil

        io.release_memory(above_mb=0)
        self._proc = psutil.Process()
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._cpu = cpu_seconds()
        return self

    def _rss(self) -> int:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # exited between the listing and the reading
                pass
        return total

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.cpu_s = cpu_seconds() - self._cpu

    @property
    def added_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


# --- a model to serve ----------------------------------------------------------------------


def rows_and_model(home: Path) -> pd.DataFrame:
    frames = []
    for key, raw in list(data.source_batches(CONTRACT).items())[:12]:
        valid = data.validate_rows(data.parse_batch(raw, CONTRACT, key), CONTRACT).valid
        frames.append(split.with_split(valid, CONTRACT))
    rows = pd.concat(frames, ignore_index=True)
    parts = {s: rows[rows["_split"] == s] for s in ("train", "validation")}
    m = {s: features.to_matrix(features.build_features(p, CONTRACT), CONTRACT)
         for s, p in parts.items()}
    trained = search.train(m["train"], parts["train"][TARGET].to_numpy(int), m["validation"],
                             parts["validation"][TARGET].to_numpy(int), CONTRACT,
                             search.TrainingSpec(n_trials=2), log=lambda _: None)
    registry = Registry(home)
    tag = registry.save(CONTRACT, trained.booster, trained.threshold, trained.best_iteration, {})
    registry.promote(tag, "benchmark")
    return rows


def records(rows: pd.DataFrame, n: int) -> list[dict]:
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in rows.head(n)[CONTRACT.features].astype(object).to_dict("records")]


# --- serving ---------------------------------------------------------------------------------


def bench_serving(home: Path, rows: pd.DataFrame, quick: bool) -> dict:
    registry = Registry(home)
    model = registry.load(registry.champion())
    one = records(rows, 1)
    cols = {k: [v] for k, v in one[0].items()}
    floor_s, _ = median_of(lambda: [model.predict_columns(cols) for _ in range(1000)], 3)
    floor_us = floor_s / 1000 * 1e6
    frame = features.to_frame(features.encode(cols, CONTRACT), CONTRACT)
    pandas_s, _ = median_of(lambda: [model.booster.predict(frame) for _ in range(200)], 3)
    batch = {k: [r[k] for r in records(rows, 1000)] for k in CONTRACT.features}
    floor_batch_s, _ = median_of(lambda: model.predict_columns(batch), 5)
    results = {"floor_single_row_us": floor_us, "floor_single_row_pandas_us":
               pandas_s / 200 * 1e6, "floor_1000_rows_per_s": 1000 / floor_batch_s}
    table_rows = 2000 if quick else 10_000
    tables = _tables(rows, table_rows)
    results.update(_table_floors(model, tables, table_rows))
    seconds = 1.0 if quick else 30.0 / 3  # quick: finite numbers, not a measurement
    repeats = 1 if quick else 3
    concurrencies = [1, 8] if quick else [1, 8, 32]
    body_one = json.dumps({"records": one}).encode()
    body_many = json.dumps({"records": records(rows, 1000)}).encode()
    env = {"MLOPS_HOME": str(home), "MLOPS_MAX_RECORDS": "1000",
           "MLOPS_MAX_BATCH_ROWS": str(table_rows),
           "MLOPS_MAX_BODY_BYTES": str(8 * 2**20), "BENTOML_DO_NOT_TRACK": "true"}
    bin_dir = Path(sys.executable).parent
    def bentoml(port: int, *service: str) -> list[str]:  # no service: bentofile.yaml's
        return [str(bin_dir / "bentoml"), "serve", *service, "--port", str(port)]

    targets = {  # name: (command, environment)
        "bentoml": (bentoml, env),  # adaptive batching on /predict (the default)
        "bentoml_unbatched": (bentoml, {**env, "MLOPS_ADAPTIVE_BATCHING": "0"}),
        # BentoML's ceiling: an endpoint that does nothing (benchmarks/empty_service.py)
        "bentoml_empty": (lambda port: bentoml(port, "benchmarks.empty_service:Empty"), env),
        "bare_starlette": (lambda port: [sys.executable, "-m", "benchmarks.bare_app",
                                         str(port)], env),
    }
    for name, (cmd, target_env) in targets.items():
        port = free_port()
        with server(cmd(port), f"http://127.0.0.1:{port}/readyz", home / f"{name}.log",
                    target_env, PROJECT_ROOT, timeout=120) as proc:
            os.sched_setaffinity(proc.pid, {0})  # the server on one core ...
            for child in _children(proc.pid):
                os.sched_setaffinity(child, {0})
            os.sched_setaffinity(0, {1})  # ... the load generator on the other
            loadgen.run("127.0.0.1", port, "/predict", body_one, 1, 1.0)  # warm up
            for c in concurrencies:
                runs = [loadgen.run("127.0.0.1", port, "/predict", body_one, c, seconds)
                        for _ in range(repeats)]
                results[f"{name}_c{c}"] = _median_run(runs)
            if name != "bentoml_empty":  # the ceiling answers single rows only
                runs = [loadgen.run("127.0.0.1", port, "/predict", body_many, 2, seconds)
                        for _ in range(repeats)]
                batch_run = _median_run(runs)
                batch_run["rows_per_s"] = batch_run["throughput_rps"] * 1000
                results[f"{name}_1000_rows"] = batch_run
                if name == "bentoml":  # the columnar route, 2 clients so the server never idles
                    for fmt, (media, body) in tables.items():
                        runs = [loadgen.run("127.0.0.1", port, "/predict_batch", body, 2, seconds,
                                            media) for _ in range(repeats)]
                        table_run = _median_run(runs)
                        table_run["rows_per_s"] = table_run["throughput_rps"] * table_rows
                        table_run["share_of_floor"] = (table_run["rows_per_s"]
                                                       / results["floor_table_rows_per_s"])
                        results[f"bentoml_table_{fmt}"] = table_run
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    for served in ("bentoml", "bentoml_unbatched", "bentoml_empty"):
        suffix = served.removeprefix("bentoml")
        for c in concurrencies:
            results[f"ratio_throughput_c{c}{suffix}"] = (
                results[f"{served}_c{c}"]["throughput_rps"]
                / results[f"bare_starlette_c{c}"]["throughput_rps"])
        for c in (1, concurrencies[-1]):
            results[f"ratio_p99_c{c}{suffix}"] = (results[f"{served}_c{c}"]["p99_ms"]
                                                  / results[f"bare_starlette_c{c}"]["p99_ms"])
    return results


def _tables(rows: pd.DataFrame, n: int) -> dict[str, tuple[str, bytes]]:
    """``n`` rows as a client sends them to /predict_batch: CSV and Parquet bodies."""
    frame = pd.DataFrame(records(pd.concat([rows] * (n // len(rows) + 1)), n),
                         columns=CONTRACT.features)
    return {fmt: (scoring.MEDIA[fmt], scoring.to_bytes(frame, fmt)) for fmt in scoring.MEDIA}


def _table_floors(model, tables: dict[str, tuple[str, bytes]], n: int) -> dict:
    """The in-process floor of a table (predicting its matrix) and the whole batch path in
    process (read, validate, encode, predict, answer, serialize), per format."""
    out = {}
    _, body = tables["parquet"]
    x = scoring.matrix(scoring.load_table(body, "parquet", CONTRACT, n), CONTRACT)
    predict_s, _ = median_of(lambda: model.predict_matrix(x), 5)
    out["floor_table_rows_per_s"] = n / predict_s
    for fmt, (_, body) in tables.items():
        stages = {"read_validate": 0.0, "predict": 0.0, "answer": 0.0}

        def path(fmt=fmt, body=body, stages=stages):
            t1 = time.perf_counter()
            frame = scoring.load_table(body, fmt, CONTRACT, n)
            t2 = time.perf_counter()
            p = model.predict_matrix(scoring.matrix(frame, CONTRACT))
            t3 = time.perf_counter()
            scoring.to_bytes(scoring.answer(p, model.threshold, model.version, "champion"), fmt)
            t4 = time.perf_counter()
            for k, v in zip(stages, (t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[k] += v

        path_s, _ = median_of(path, 5)
        out[f"in_process_table_{fmt}"] = {
            "rows_per_s": n / path_s, "bytes": len(body),
            **{f"{k}_ms": v / 5 * 1000 for k, v in stages.items()}}  # per run
    return out


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _median_run(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# --- drift -----------------------------------------------------------------------------------


def bench_drift(rows: pd.DataFrame, quick: bool) -> dict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    base = features.build_features(rows, CONTRACT)
    sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        ref = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
        cur = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
        cur["age"] = cur["age"] + 3  # a real shift in one column
        gc.collect()
        with PeakRSS() as mem:
            t, _ = median_of(lambda r=ref, c=cur: drift.compute_drift(r, c, CONTRACT),
                             1 if quick else 3)
        ours = drift.compute_drift(ref, cur, CONTRACT)
        cols = [c for c in CONTRACT.features if ref[c].notna().any() and cur[c].notna().any()]

        def prepared(df, cols=cols):
            f = df[cols].astype({c: object for c in CONTRACT.categorical if c in cols})
            return Dataset.from_pandas(f, data_definition=DataDefinition(
                numerical_columns=[c for c in cols if c in CONTRACT.numeric],
                categorical_columns=[c for c in cols if c in CONTRACT.categorical]))

        gc.collect()
        with PeakRSS() as ev_mem:
            started = time.perf_counter()
            snap = Report([DataDriftPreset()]).run(current_data=prepared(cur),
                                                   reference_data=prepared(ref))
            ev_seconds = time.perf_counter() - started
        theirs = {m["config"]["column"]: float(m["value"]) for m in snap.dict()["metrics"]
                  if m["metric_name"].startswith("ValueDrift")}
        same = all(
            (c.score >= 0.1) == (theirs[c.column] >= 0.1) for c in ours.columns
            if c.column in theirs and c.method in ("wasserstein_norm", "jensenshannon"))
        out[f"rows_{n}"] = {"ours_s": t, "ours_added_mb": mem.added_mb,
                            "evidently_s": ev_seconds, "evidently_added_mb": ev_mem.added_mb,
                            "same_verdicts": same, "drifted_share": ours.drifted_share}
    return out


# --- pipeline --------------------------------------------------------------------------------


def bench_pipeline(quick: bool, scales: list[int], training: tuple[str, ...] = ("local",),
                   keep: Path | None = None, max_rounds: int | None = None,
                   ingest_pairs: int = 1) -> dict:
    """End to end through Dagster on a real instance, per stage: wall time, peak memory
    (this process and its children). ``training``: the training stage run locally, and/or
    with its final fit by lightgbm.dask on a 2-worker LocalCluster, on the same dataset.

    ``keep``: the pipeline's home for each scale is ``keep/x<scale>``, kept after the run, and
    the stages already measured there (``stages.json``) are not run again: a 1000x run can be
    taken in two sittings (the data stages, then training on the same instance).
    ``max_rounds``: the training budget in boosting rounds (the spec's default if None).
    ``ingest_pairs``: how many times the anchor and ingest + validate are measured, one right
    after the other (``ingest_pair``): the ratios' median is ``ingest_over_polars_median``."""
    import dagster as dg

    from mlops_assets import orchestration
    from mlops_assets.definitions import build_definitions

    out = {}
    for scale in scales:
        with contextlib.ExitStack() as stack:
            if keep is None:
                home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            else:
                home = keep / f"x{scale}"
                home.mkdir(parents=True, exist_ok=True)
            done = home / "stages.json"
            stages = json.loads(done.read_text()) if done.exists() else {}

            def record(name, seconds, mem, stages=stages, done=done):
                stages[name] = {"seconds": seconds, "cpu_seconds": round(mem.cpu_s, 1),
                                "peak_added_mb": mem.added_mb,
                                "peak_rss_mb": mem.peak / 2**20,
                                "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                if keep is not None:
                    io.write_json(done, stages)

            dagster_home = orchestration.ensure_dagster_home(home / "dagster")
            batches = data.source_batches(CONTRACT)
            if quick:  # the demo's 12 periods: every stage runs, on fewer batch runs
                batches = dict(list(batches.items())[:12])
            if "ingest_validate" not in stages:
                for key, df in batches.items():
                    data.write_batch(pd.concat([df] * scale, ignore_index=True),
                                     home / "landing", key, CONTRACT.source.separator)
            defs = build_definitions(str(home), "bank")
            if "polars_read_type_write" not in stages:
                with PeakRSS() as mem:
                    started = time.perf_counter()
                    polars_anchor(home / "landing", home / "anchor")
                record("polars_read_type_write", time.perf_counter() - started, mem)
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                if "ingest_validate" not in stages:
                    with PeakRSS() as mem:
                        started = time.perf_counter()
                        tick = orchestration.tick_landing_sensor(defs, instance)
                        ingest_as_launched(home, dagster_home, tick.run_requests)
                    record("ingest_validate", time.perf_counter() - started, mem)
                    stages["ingest_validate"]["runs"] = len(tick.run_requests)
                    stages["ingest_validate"]["batches"] = _batches_asked(tick.run_requests)
                if "largest_batch_cpu" not in stages:
                    landed = max((home / "landing").glob(f"*{data.BATCH_SUFFIX}"),
                                 key=lambda p: p.stat().st_size)
                    stages["largest_batch_cpu"] = ingest_breakdown(landed, home / "breakdown")
                    if keep is not None:
                        io.write_json(done, stages)
                if ingest_pairs > 1 and len(stages.get("ingest_pairs", [])) < ingest_pairs:
                    pairs = stages.setdefault("ingest_pairs", [_pair_of(stages)])
                    while len(pairs) < ingest_pairs:
                        pairs.append(ingest_pair(home / "landing", home / "pair"))
                        os.environ["DAGSTER_HOME"] = str(dagster_home)
                        if keep is not None:
                            io.write_json(done, stages)
                if "sensor_ticks" not in stages:
                    stages["sensor_ticks"] = sensor_ticks(defs, instance, home)
                    if keep is not None:
                        io.write_json(done, stages)
                trainings = [
                    ("train_evaluate_gate_bento" + ("" if where == "local" else "_dask"),
                     "train_and_promote", {"ops": {"candidate_model": {"config": {
                         "n_trials": 2,
                         **({"max_rounds": max_rounds} if max_rounds else {}),
                         "distributed_min_rows": None if where == "local" else 0}}}})
                    for where in training if where != "none"]
                for name, job, config in [
                    ("dataset_features_eda", "build_dataset", None), *trainings,
                ]:
                    if name in stages:
                        continue
                    with PeakRSS() as mem:
                        started = time.perf_counter()
                        result = orchestration.run_job(defs, instance, job, quiet=True,
                                                       run_config=config, raise_on_error=False)
                    record(name, time.perf_counter() - started, mem)
                    stages[name]["ok"] = bool(result.success)
                    if config:
                        stages[name]["config"] = config["ops"]["candidate_model"]["config"]
                    if job == "train_and_promote":  # judged even if the gate then blocked it
                        evaluated = {e.asset_key.to_user_string(): e for e in
                                     result.get_asset_materialization_events()}
                        if "model_evaluation" in evaluated:
                            stages[name]["test_auc"] = evaluated["model_evaluation"] \
                                .materialization.metadata["roc_auc"].value
                    if keep is not None:
                        io.write_json(done, stages)
            rows = sum(len(df) for df in batches.values()) * scale
            out[f"x{scale}"] = {"rows": rows, **stages,
                                "ingest_over_polars": round(
                                    stages["ingest_validate"]["seconds"]
                                    / stages["polars_read_type_write"]["seconds"], 2),
                                # the same in CPU time: what the work costs whatever
                                # else the machine runs (None for stages measured before
                                # it was recorded)
                                "ingest_over_polars_cpu": _ratio(
                                    stages["ingest_validate"].get("cpu_seconds"),
                                    stages["polars_read_type_write"].get("cpu_seconds")),
                                **_pair_medians(stages.get("ingest_pairs", []))}
    out["orchestration_overhead"] = bench_overhead()
    return out


def _pair_of(stages: dict) -> dict:
    """The stage's own anchor and ingest + validate as a pair (``ingest_pair``'s keys)."""
    anchor, ingest = stages["polars_read_type_write"], stages["ingest_validate"]
    return {"anchor_s": round(anchor["seconds"], 1), "anchor_cpu_s": anchor.get("cpu_seconds"),
            "ingest_s": round(ingest["seconds"], 1), "ingest_cpu_s": ingest.get("cpu_seconds"),
            "ingest_peak_rss_mb": round(ingest["peak_rss_mb"]), "batches": ingest.get("batches")}


def ingest_pair(landing: Path, home: Path) -> dict:
    """The anchor, then ingest + validate as the landing sensor's runs do it, once more on
    the files of ``landing`` (linked into ``home``, a new pipeline home with a new instance:
    nothing ingested yet; removed after). On a host whose speed drifts (this one's anchor
    took 27-38 s at 1000x within an hour), pairs measured back to back, and the median of
    their ratios, say more than one pair."""
    import shutil

    import dagster as dg

    from mlops_assets import orchestration
    from mlops_assets.definitions import build_definitions

    shutil.rmtree(home, ignore_errors=True)
    (home / "landing").mkdir(parents=True)
    try:
        for path in landing.glob(f"*{data.BATCH_SUFFIX}"):
            os.link(path, home / "landing" / path.name)
        dagster_home = orchestration.ensure_dagster_home(home / "dagster")
        defs = build_definitions(str(home), "bank")
        with PeakRSS() as anchor:
            started = time.perf_counter()
            polars_anchor(home / "landing", home / "anchor")
        anchor_s = time.perf_counter() - started
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance, PeakRSS() as mem:
            started = time.perf_counter()
            tick = orchestration.tick_landing_sensor(defs, instance)
            asked, landed = _batches_asked(tick.run_requests), len(list(landing.glob(
                f"*{data.BATCH_SUFFIX}")))
            if asked != landed:  # an instance that had them (one database for all homes)
                raise RuntimeError(f"ingest_pair: the landing sensor asked to ingest {asked} "
                                   f"of the {landed} batches landed in {home / 'landing'}; "
                                   "each pair needs an instance of its own")
            ingest_as_launched(home, dagster_home, tick.run_requests)
        ingest_s = time.perf_counter() - started
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {"anchor_s": round(anchor_s, 1), "anchor_cpu_s": round(anchor.cpu_s, 1),
            "ingest_s": round(ingest_s, 1), "ingest_cpu_s": round(mem.cpu_s, 1),
            "ingest_peak_rss_mb": round(mem.peak / 2**20),
            "batches": asked}


def _batches_asked(requests: list) -> int:
    """How many batches the landing sensor's run requests ingest between them."""
    return sum(len(r.run_config["ops"]["ingest_landed_batches"]["config"]["batches"])
               for r in requests)


def _pair_medians(pairs: list[dict]) -> dict:
    """The median ratio, in wall and in CPU time, of ingest + validate over the anchor."""
    if len(pairs) < 2:
        return {}
    import statistics

    cpu = [_ratio(p["ingest_cpu_s"], p["anchor_cpu_s"]) for p in pairs]
    return {"ingest_over_polars_median": round(statistics.median(
                p["ingest_s"] / p["anchor_s"] for p in pairs), 2),
            # None if a pair was measured before CPU time was (a kept home's first stage)
            "ingest_over_polars_cpu_median": None if None in cpu else round(statistics.median(
                p["ingest_cpu_s"] / p["anchor_cpu_s"] for p in pairs), 2)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def sensor_ticks(defs, instance, home: Path) -> dict:
    """What a tick of the landing and the scoring sensor costs (wall seconds) over this
    scale's landed files, all already ingested: the first tick reads every file, an idle one
    only what changed. The scoring sensor sees the same files, linked into its folder for
    the measurement and unlinked after it (no champion yet: they wait, unscored)."""
    from mlops_assets import orchestration
    from mlops_assets.config import Paths

    def tick(name: str, cursor: str | None) -> tuple[float, str | None]:
        started = time.perf_counter()
        result = orchestration.tick_sensor(defs, instance, name, cursor)
        return time.perf_counter() - started, result.cursor

    landed = sorted((home / "landing").glob(f"*{data.BATCH_SUFFIX}"))
    out = {"files": len(landed), "bytes": sum(p.stat().st_size for p in landed)}
    time.sleep(io.SETTLED_SECONDS)  # a file changed since is read again each tick
    out["landing_first_s"], cursor = tick("landing_sensor", None)
    out["landing_idle_s"], _ = tick("landing_sensor", cursor)
    folder = Paths(home).scoring_landing
    folder.mkdir(parents=True, exist_ok=True)
    links = [folder / p.name for p in landed]
    try:
        for source, link in zip(landed, links, strict=True):
            os.link(source, link)
        time.sleep(io.SETTLED_SECONDS)  # a new link is a change of the file (its ctime)
        out["scoring_first_s"], cursor = tick("scoring_sensor", None)
        out["scoring_idle_s"], _ = tick("scoring_sensor", cursor)
    finally:
        for link in links:
            link.unlink(missing_ok=True)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def ingest_as_launched(home: Path, dagster_home: Path, requests: list) -> None:
    """The landing sensor's ingest_landed runs as the daemon launches them: each in its own
    process, all at once (the instance runs two at a time; the sensor asks for two at most,
    shared by size), each doing what its op does (``ingest``: every batch its own run)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    configs = [r.run_config["ops"]["ingest_landed_batches"]["config"] for r in requests]
    with ProcessPoolExecutor(max(1, len(configs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [pool.submit(_ingest_landed, str(home), str(dagster_home), config)
                for config in configs]
        failed = [batch for run in runs for batch in run.result()]
    if failed:
        raise RuntimeError(f"ingestion failed for batches {failed}")


def _ingest_landed(home: str, dagster_home: str, config: dict) -> list[str]:
    """One ingest_landed run's batches in this (child) process; those that failed."""
    import dagster as dg

    from mlops_assets.definitions import build_definitions
    from mlops_assets.defs.ingestion.sensors import LandedConfig, ingest

    defs = build_definitions(home, "bank")
    landed = LandedConfig(**config)
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        results = ingest(defs.resolve_job_def("ingest_batch"), instance, landed.requests())
    return [b for b, r in zip(landed.batches, results, strict=True) if not r.success]


def ingest_breakdown(path: Path, work: Path) -> dict:
    """Where ingesting one landed file goes, in CPU seconds (this process, every thread):
    the Polars anchor on that file alone, then each part of ``ingest_batch`` as its steps do
    it (the kept copy, the stored text, its profile, the raw check, and validation's
    reading, typing, checking and writing), without Dagster around them; ``ours_over_anchor``
    is their sum over the anchor's."""
    import shutil

    import polars as pl

    from mlops_assets.defs.ingestion.assets import FAILURES_KEPT
    from mlops_assets.schemas import failure_sample, raw_schema

    shutil.rmtree(work, ignore_errors=True)
    (work / "landing").mkdir(parents=True)
    os.link(path, work / "landing" / path.name)
    batch, stored = path.stem, work / "raw.parquet"
    cpu: dict[str, float] = {}

    def timed(name: str, step) -> None:
        started = time.process_time()
        step()
        cpu[name] = time.process_time() - started

    try:
        timed("polars_anchor", lambda: polars_anchor(work / "landing", work / "anchor"))
        kept: list[Path] = []
        timed("keep_copy", lambda: kept.append(data.keep_batch(path, work / "backup",
                                                                batch)[1]))
        timed("store_text", lambda: data.store_batch_text(kept[0], CONTRACT, stored))
        timed("profile", lambda: data.batch_profile(stored, CONTRACT, batch))
        timed("raw_check", lambda: failure_sample(raw_schema(CONTRACT), pl.scan_parquet(stored),
                                                  per_check=FAILURES_KEPT))
        phases: dict[str, float] = {}
        found = data.validate_stored(stored, CONTRACT, batch, work / "valid.parquet",
                                     work / "quarantined.parquet", cpu=phases)
        cpu.update({f"validate_{k}": v for k, v in phases.items()})
        # The least a design could do and still keep, type, check and quarantine: the kept
        # copy's text read once and validated as it streams (no stored text, no profile, no
        # raw check, no Dagster). Not a part of ingest_batch: not in ``ours``.
        started = time.process_time()
        again = data.validate_frames(data.read_batch_frames(kept[0], CONTRACT, io.CHUNK_ROWS),
                                     CONTRACT, batch, work / "valid_1.parquet",
                                     work / "quarantined_1.parquet")
        one_pass = time.process_time() - started + cpu["keep_copy"]
        if (again.valid, again.quarantined) != (found.valid, found.quarantined):
            raise RuntimeError(f"ingest_breakdown: one pass over {path} found {again.valid} "
                               f"valid and {again.quarantined} quarantined rows, validation "
                               f"of the stored text {found.valid} and {found.quarantined}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = sum(v for k, v in cpu.items() if k != "polars_anchor")
    return {"file": path.name, "bytes": path.stat().st_size,
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "ours_cpu_s": round(ours, 3),
            "ours_over_anchor": round(ours / cpu["polars_anchor"], 2),
            "one_pass_cpu_s": round(one_pass, 3),
            "one_pass_over_anchor": round(one_pass / cpu["polars_anchor"], 2)}


def polars_anchor(landing: Path, out: Path) -> None:
    """The floor ingestion is held to (#27): Polars streams each landed file to typed Parquet
    (the contract's types, missing tokens as null) with a group-by per file, nothing else."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    types = {**dict.fromkeys(CONTRACT.categorical, pl.String),
             **dict.fromkeys(CONTRACT.numeric, pl.Float64)}
    for path in sorted(landing.glob("*.csv")):
        scan = pl.scan_csv(path, separator=CONTRACT.source.separator, infer_schema=False,
                           null_values=["", *CONTRACT.missing_tokens])
        typed = scan.with_columns(pl.col(c).cast(t, strict=False) for c, t in types.items())
        typed.sink_parquet(out / f"{path.stem}.parquet")
        pl.scan_parquet(out / f"{path.stem}.parquet").group_by("job").agg(
            pl.col("age").mean()).collect()


def bench_overhead() -> dict:
    """A trivial 5-asset chain, in process: the fixed cost of Dagster per run and per step."""
    import dagster as dg

    @dg.asset
    def a1() -> int:
        return 1

    chain = [a1]
    for i in range(2, 6):
        prev = chain[-1]

        @dg.asset(name=f"a{i}", ins={"x": dg.AssetIn(prev.key)})
        def step(x: int) -> int:
            return x + 1

        chain.append(step)
    t, _ = median_of(lambda: dg.materialize(chain, instance=dg.DagsterInstance.ephemeral()), 3)
    return {"five_asset_chain_in_process_s": t, "per_step_s": t / 5}


# --- profiles --------------------------------------------------------------------------------


def _instance_totals(dagster_home: Path) -> dict:
    """Per job from the instance's runs: runs, steps, run wall time (start to end) and the
    steps' own time (their STEP_SUCCESS durations); the difference is orchestration."""
    import dagster as dg

    out: dict[str, dict] = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for record in instance.get_run_records():
            run = record.dagster_run
            job = out.setdefault(run.job_name, {"runs": 0, "steps": 0, "run_s": 0.0,
                                                "step_s": 0.0})
            job["runs"] += 1
            job["run_s"] += (record.end_time or 0) - (record.start_time or 0)
            for entry in instance.all_logs(run.run_id,
                                           of_type=dg.DagsterEventType.STEP_SUCCESS):
                job["steps"] += 1
                job["step_s"] += entry.dagster_event.step_success_data.duration_ms / 1000
    return out


def bench_profiles(periods: int = 26, trials: int = 2) -> dict:
    """The 1x pipeline (every Bank period, 2 search trials) as a user runs it
    (`mlops-assets demo`: the landing sensor ingests, then build and train), in the embedded
    default (SQLite, steps in each run's process) and under the production profile
    (PostgreSQL, steps on 2 Dask workers, separate code server, webserver and daemon): wall
    time, per-job orchestration overhead per step, and the challenger's sealed-test AUC."""
    import re

    from mlops_assets.platform import postgres

    cli = str(Path(sys.executable).parent / "mlops-assets")
    demo = ["demo", "--periods", str(periods), "--trials", str(trials)]
    out = {}
    for profile in ("embedded", "production"):
        with tempfile.TemporaryDirectory() as tmp:
            home, env = Path(tmp) / "home", {k: v for k, v in os.environ.items()
                                             if k != postgres.URL_ENV}
            if profile == "production":
                pg_port, ui_port = free_port(), free_port()
                env[postgres.URL_ENV] = postgres.url(pg_port)
                context = server([cli, "--home", str(home), "production", "--port",
                                  str(ui_port), "--pg-port", str(pg_port)],
                                 f"http://127.0.0.1:{ui_port}/server_info",
                                 Path(tmp) / "production.log", {"MLOPS_SENSOR_INTERVAL": "3"},
                                 PROJECT_ROOT, timeout=240)
            else:
                context = contextlib.nullcontext()
            with context:
                started = time.perf_counter()
                run = subprocess.run([cli, "--home", str(home), *demo], capture_output=True,
                                     text=True, cwd=PROJECT_ROOT, env=env, timeout=3600)
                seconds = time.perf_counter() - started
                assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
                os.environ.pop(postgres.URL_ENV, None)
                os.environ.update({postgres.URL_ENV: env[postgres.URL_ENV]}
                                  if postgres.URL_ENV in env else {})
                jobs = _instance_totals(home / "dagster")  # its dagster.yaml reads the URL
                os.environ.pop(postgres.URL_ENV, None)
        auc = re.search(r"sealed-test AUC (\S+),", run.stdout)
        steps = sum(j["steps"] for j in jobs.values())
        out[profile] = {"seconds": seconds, "auc": auc and float(auc.group(1)), "jobs": jobs,
                        "steps": steps, "overhead_per_step_s": sum(
                            j["run_s"] - j["step_s"] for j in jobs.values()) / max(steps, 1)}
    out["same_auc"] = out["embedded"]["auc"] == out["production"]["auc"]
    if not out["same_auc"]:  # the executor must not change results (issue #11)
        raise AssertionError(f"embedded and production demos differ: {out}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "benchmarks" / "results"))
    parser.add_argument("--scales", default=None, help="pipeline data scales, e.g. 1,10,100")
    parser.add_argument("--training", default="local",
                        help="pipeline training stage: local, dask, local,dask or none (the "
                             "data stages only)")
    parser.add_argument("--keep", default=None,
                        help="keep each scale's pipeline home under this directory and skip "
                             "the stages already measured there")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="pipeline training budget in boosting rounds (default: the "
                             "training spec's)")
    parser.add_argument("--ingest-pairs", type=int, default=1,
                        help="measure the Polars anchor and ingest + validate this many times "
                             "back to back (fresh instances) and report the ratios' median")
    parser.add_argument("--only", choices=["serving", "drift", "pipeline", "profiles",
                                           "quality"],
                        default=None,
                        help="run one benchmark group")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")] if args.scales else (
        [1] if args.quick else [1, 10])
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()},
               "quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())}
    started = time.perf_counter()
    # The profiles (two full demos, ~10 min) are left out of --quick, which CI runs.
    wanted = {args.only} if args.only else (
        {"serving", "drift", "pipeline", "quality"} | (set() if args.quick else {"profiles"}))
    if wanted & {"serving", "drift"}:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            rows = rows_and_model(home)
            if "serving" in wanted:
                results["serving"] = bench_serving(home, rows, args.quick)
        if "drift" in wanted:
            results["drift"] = bench_drift(rows, args.quick)
    if "pipeline" in wanted:
        results["pipeline"] = bench_pipeline(args.quick, scales,
                                             tuple(args.training.split(",")),
                                             Path(args.keep) if args.keep else None,
                                             args.max_rounds, args.ingest_pairs)
    if "profiles" in wanted:
        results["profiles"] = bench_profiles()
    if "quality" in wanted:
        from benchmarks import quality

        results["quality"] = (quality.bench_quality(sizes=(1000,), seeds=(0,), n_trials=5,
                                                    datasets=("breast_cancer", "bank"))
                              if args.quick else quality.bench_quality())
        print(quality.table(results["quality"]))
    results["seconds"] = time.perf_counter() - started
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out)
    name = "quick.json" if args.quick else (f"{args.only}.json" if args.only else "latest.json")
    io.write_json(out / name, results)
    print(json.dumps(results, indent=1, default=str))
    print(f"written to {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
