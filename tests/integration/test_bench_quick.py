"""The benchmark harness in quick mode: every benchmark runs and gives finite numbers (no
speed is asserted here; targets live in benchmarks/ and docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from mlops_assets.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, bool):
        return
    elif isinstance(obj, int | float):
        yield path, obj


def test_quick_benchmarks_produce_finite_numbers(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out",
                           str(tmp_path), "--ingest-pairs", "2"], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    numbers = dict(_numbers(results))
    assert len(numbers) > 40
    bad = {k: v for k, v in numbers.items() if not math.isfinite(v)}
    assert not bad
    serving = results["serving"]
    for name in ("bentoml_c1", "bentoml_c8", "bare_starlette_c1", "bare_starlette_c8"):
        assert serving[name]["requests"] > 0 and serving[name]["errors"] == 0
    assert results["drift"]["rows_10000"]["same_verdicts"] is True
    assert results["pipeline"]["x1"]["train_evaluate_gate_bento"]["ok"] is True
    # where one batch's ingestion goes: the anchor and every part of ingest_batch
    breakdown = results["pipeline"]["x1"]["largest_batch_cpu"]
    assert set(breakdown["cpu_s"]) == {
        "polars_anchor", "keep_copy", "store_text", "profile", "raw_check", "validate_read",
        "validate_parse", "validate_check", "validate_write"}
    assert breakdown["ours_cpu_s"] == pytest.approx(
        sum(v for k, v in breakdown["cpu_s"].items() if k != "polars_anchor"), abs=0.01)
    # and the floor of one pass (the kept copy, then its text validated as it is read)
    assert breakdown["one_pass_cpu_s"] > breakdown["cpu_s"]["keep_copy"]
    assert breakdown["one_pass_over_anchor"] == pytest.approx(
        breakdown["one_pass_cpu_s"] / breakdown["cpu_s"]["polars_anchor"], rel=0.05)
    # the anchor and ingest + validate measured again, back to back, on a fresh instance:
    # the second pair ingested every batch again (its own runs), and the medians are theirs
    x1 = results["pipeline"]["x1"]
    pairs = x1["ingest_pairs"]
    assert len(pairs) == 2 and pairs[0]["ingest_s"] == round(x1["ingest_validate"]["seconds"], 1)
    assert [p["batches"] for p in pairs] == [12, 12]  # the quick run's 12 batches, twice
    assert min(p["ingest_s"] / p["anchor_s"] for p in pairs) <= \
        x1["ingest_over_polars_median"] <= max(p["ingest_s"] / p["anchor_s"] for p in pairs)
