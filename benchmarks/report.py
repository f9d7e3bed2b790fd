"""Print the benchmark tables of a results file (docs/benchmarks.md):
python -m benchmarks.report [results.json]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlops_assets.config import PROJECT_ROOT


def _rate(run: dict) -> str:
    return (f"{run['throughput_rps']:.0f} ({run['p50_ms']:.1f} / {run['p99_ms']:.1f} / "
            f"{run['max_ms']:.0f})")


def _serving(s: dict) -> list[str]:
    lines = ["| benchmark | BentoML, adaptive batching | BentoML, unbatched | BentoML, empty "
             "endpoint (ceiling) | bare Starlette | ratio to bare (batched / unbatched / "
             "ceiling) | target |", "|---|---|---|---|---|---|---|"]
    for c in (1, 8, 32):
        b, u, e, r = (s.get(f"{k}_c{c}") for k in ("bentoml", "bentoml_unbatched",
                                                    "bentoml_empty", "bare_starlette"))
        if b and u and r:
            ratio = " / ".join(f"{x['throughput_rps'] / r['throughput_rps']:.2f}" if x else "-"
                               for x in (b, u, e))
            if c == 32:
                ratio += (f"; p99 {b['p99_ms'] / r['p99_ms']:.1f}x / "
                          f"{u['p99_ms'] / r['p99_ms']:.1f}x")
            target = ">= 0.5" if c == 1 else ">= 0.8" + ("; p99 <= 2x" if c == 32 else "")
            lines.append(f"| single row, concurrency {c}: req/s (p50 / p99 / max ms) | "
                         f"{_rate(b)} | {_rate(u)} | {_rate(e) if e else '-'} | {_rate(r)} | "
                         f"{ratio} | {target} |")
    b, u, r = (s.get(f"{k}_1000_rows") for k in ("bentoml", "bentoml_unbatched",
                                                  "bare_starlette"))
    if b and u and r:
        lines.append(f"| 1,000-row JSON requests: rows/s | {b['rows_per_s']:.0f} | "
                     f"{u['rows_per_s']:.0f} | | {r['rows_per_s']:.0f} | "
                     f"{b['rows_per_s'] / r['rows_per_s']:.2f} / "
                     f"{u['rows_per_s'] / r['rows_per_s']:.2f} | |")
    lines.append(f"| in-process floor: one row / 1,000 rows | {s['floor_single_row_us']:.0f} us /"
                 f" {s['floor_1000_rows_per_s']:.0f} rows/s | | | pandas frame path: "
                 f"{s['floor_single_row_pandas_us']:.0f} us | | |")
    floor = s.get("floor_table_rows_per_s")
    for fmt in ("csv", "parquet"):
        t, inproc = s.get(f"bentoml_table_{fmt}"), s.get(f"in_process_table_{fmt}")
        if not (t and inproc and floor):
            continue
        lines.append(
            f"| `/predict_batch`, 10,000-row {fmt.upper()} tables: rows/s (p50 / p99 ms) | "
            f"{t['rows_per_s']:.0f} ({t['p50_ms']:.0f} / {t['p99_ms']:.0f}) | | | in process: "
            f"{inproc['rows_per_s']:.0f} (read + validate {inproc['read_validate_ms']:.0f} + "
            f"predict {inproc['predict_ms']:.0f} + answer {inproc['answer_ms']:.0f} ms) | "
            f"{t['share_of_floor']:.2f} of the {floor:.0f} rows/s predict floor | >= 0.5 of "
            "floor |")
    return lines


def _drift(results: dict) -> list[str]:
    lines = ["| drift window | ours: s (added MB) | Evidently DataDriftPreset: s (added MB) "
              "| same verdicts |", "|---|---|---|---|"]
    for k, v in results["drift"].items():
        rows = int(k.split("_")[1])
        lines.append(f"| {rows:,} rows | {v['ours_s']:.2f} ({v['ours_added_mb']:.0f}) | "
                     f"{v['evidently_s']:.1f} ({v['evidently_added_mb']:.0f}) | "
                     f"{v['same_verdicts']} |")
    return lines


def _pipeline(results: dict) -> list[str]:
    lines = ["| pipeline | rows | ingest + validate s (MB) | dataset + features + EDA s "
              "(MB) | train (2 trials) + evaluate + gate + Bento s (MB) |", "|---|---|---|---|---|"]
    for k, v in results["pipeline"].items():
        if not k.startswith("x"):
            continue
        stages = [v.get(s) for s in ("ingest_validate", "dataset_features_eda",
                                     "train_evaluate_gate_bento")]
        lines.append(f"| {k} | {v['rows']:,} | " + " | ".join(
            f"{st['seconds']:.1f} ({st['peak_added_mb']:.0f})" if st else "not run"
            for st in stages) + " |")
        dask = v.get("train_evaluate_gate_bento_dask")
        if dask:  # the same stage, its final fit by lightgbm.dask on a 2-worker LocalCluster
            local = v.get("train_evaluate_gate_bento") or {}
            lines.append(f"| {k}, final fit on a 2-worker Dask LocalCluster | {v['rows']:,} |"
                         f" | | {dask['seconds']:.1f} ({dask['peak_added_mb']:.0f}); test AUC "
                         f"{dask.get('test_auc', float('nan')):.4f} vs local "
                         f"{local.get('test_auc', float('nan')):.4f} |")
    o = results["pipeline"]["orchestration_overhead"]
    lines.append(f"\nDagster overhead: a trivial 5-asset chain in process "
                 f"{o['five_asset_chain_in_process_s']:.2f} s ({o['per_step_s'] * 1000:.0f} ms "
                 f"per step).")
    return lines


def _profiles(p: dict) -> list[str]:
    lines = ["| 1x pipeline via `mlops-assets demo` (26 periods, 2 trials) | wall s | "
              "steps | orchestration s per step (ingest / build / train) | sealed-test AUC |",
              "|---|---|---|---|---|"]
    for name in ("embedded", "production"):
        v = p[name]
        per_job = " / ".join(
            f"{(j['run_s'] - j['step_s']) / max(j['steps'], 1):.2f}"
            for j in (v["jobs"].get(k, {"run_s": 0, "step_s": 0, "steps": 0})
                      for k in ("ingest_batch", "build_dataset", "train_and_promote")))
        lines.append(f"| {name} | {v['seconds']:.0f} | {v['steps']} | "
                     f"{v['overhead_per_step_s']:.2f} ({per_job}) | {v['auc']} |")
    lines.append(f"\nSame sealed-test AUC: {p['same_auc']}.")
    return lines


def _quality(q: dict) -> str:
    from benchmarks.quality import table as quality_table

    return quality_table(q)


def table(results: dict) -> str:
    """The tables of the groups the results hold, in docs/benchmarks.md's order."""
    parts = [_serving(results["serving"]) if "serving" in results else [],
             _drift(results) if "drift" in results else [],
             _pipeline(results) if "pipeline" in results else [],
             _profiles(results["profiles"]) if "profiles" in results else [],
             [_quality(results["quality"])] if "quality" in results else []]
    return "\n\n".join("\n".join(part) for part in parts if part)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else (
        PROJECT_ROOT / "benchmarks" / "results" / "latest.json")
    print(table(json.loads(path.read_text())))
