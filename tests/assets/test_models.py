"""Training -> evaluation -> gate -> champion as real materializations on a real instance,
with a temporary BENTOML_HOME (the project home) and a small trial budget."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dagster as dg
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets import orchestration
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.resources import GateResource
from tests.conftest import check_results, materialized, trained_home

BATCHES = ("2008-11", "2009-04", "2009-05", "2009-06", "2009-07")
GATE_CHECKS = ("meets_absolute_thresholds", "not_worse_than_champion", "slices_hold_up",
               "serves_finite_probabilities")


@pytest.fixture
def trained(tmp_path, monkeypatch, bank_batches):
    with trained_home(tmp_path, monkeypatch, bank_batches, BATCHES) as trained:
        yield trained


def test_train_evaluate_promote_and_card(trained):
    project, run = trained
    assert {"candidate_model", "model_evaluation", "model_card", "gate_report", "champion",
            "bento"} <= materialized(run)
    checks = check_results(run)
    assert all(checks[f"gate_report:{c}"].passed for c in GATE_CHECKS)
    absolute = checks["gate_report:meets_absolute_thresholds"].metadata
    assert absolute["test_auc"].value >= absolute["min_auc"].value == 0.6
    schema = project.instance.get_latest_materialization_event(dg.AssetKey(
        "train_features")).asset_materialization.metadata["dagster/column_schema"].value
    described = {c.name: c.description for c in schema.columns}
    assert described["pdays"] == "numeric in [0, 999]; 999 means not applicable"
    assert described["_row_key"].startswith("the row's id")  # (#29)
    assert {c.name: c.type for c in schema.columns}["job"] == "category"
    model = run.output_for_node("candidate_model")
    registry = project.registry()
    assert registry.champion() == model["tag"]
    stored = registry.get(model["tag"])
    meta = stored.info.metadata
    assert meta["params"]["seed"] == 42 and meta["features"][0] == "job"
    assert set(meta["data_versions"]) == set(BATCHES)
    assert all(len(v) == 64 for v in meta["data_versions"].values())
    assert meta["validation_metrics"]["auc"] > 0.5 and meta["libraries"]["lightgbm"]
    evaluation = run.output_for_node("model_evaluation")
    m = evaluation["metrics"]
    assert 0.6 < m["roc_auc"] < 1 and evaluation["roc_auc_ci95"][0] < m["roc_auc"]
    assert {s["slice"] for s in evaluation["slices"]} == {"age_band", "job", "contact"}
    assert sum(b["rows"] for b in evaluation["calibration"]) == m["rows"]
    assert "<html" in open(evaluation["report"]).read(3000).lower()
    card = next(e for e in run.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "model_card")
    text = card.materialization.metadata["card"].value
    assert model["tag"] in text and f"{m['roc_auc']:.4f}" in text and "Known limitations" in text
    slices = text.split("## Slices", 1)[1].split("## Calibration", 1)[0]
    assert "1.96 standard errors" in slices and "nan" not in slices.lower(), slices
    bento = next(e for e in run.get_asset_materialization_events()
                 if e.asset_key.to_user_string() == "bento").materialization.metadata
    bento_dir = Path(bento["bento_path"].value)
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert manifest["services"][0]["models"][0]["tag"] == model["tag"]
    bundle = json.loads((bento_dir / "src/mlops_assets/serving/bundle.json").read_text())
    assert bundle["model_tag"] == model["tag"]
    assert bundle["contract"] == project.contract.model_dump(mode="json")  # the whole contract
    assert not (bento_dir / "src/mlops_assets/defs").exists()  # serving code only
    assert bento["bento_size"].value.endswith(" MiB") and bento_dir.is_dir()
    assert bento["origin"].value == "the Bento its deploy-time check served"


def _shuffle_labels(project, name: str, seed: int) -> None:
    path = project.stored_file(name)
    frame = pd.read_parquet(path)
    frame["_target"] = np.random.default_rng(seed).permutation(frame["_target"].to_numpy())
    frame.to_parquet(path, index=False)


def test_degraded_challenger_is_blocked(trained):
    project, first = trained
    registry = project.registry()
    champion, history = registry.champion(), registry.history()
    _shuffle_labels(project, "train_features", 1)
    _shuffle_labels(project, "validation_features", 2)
    run = project.train(seed=1)
    assert not run.success
    checks = check_results(run)
    failed = checks["gate_report:not_worse_than_champion"]
    assert not failed.passed and "AUC delta -0." in failed.description
    numbers = {k: v.value for k, v in failed.metadata.items()}  # plotted in the UI
    assert numbers["auc_delta"] < 0 and numbers["auc_delta_ci_low"] < -numbers["auc_margin"] \
        or numbers["log_loss_delta_ci_high"] > numbers["log_loss_margin"]
    assert "why" not in numbers and numbers["rows"] >= 100
    assert "failed: " in orchestration.run_failure(project.instance, run.run_id)
    assert not {"champion", "bento"} & materialized(run)
    assert registry.champion() == champion and registry.history() == history
    challenger = run.output_for_node("candidate_model")["tag"]
    assert challenger in registry.versions()  # kept as a version, never promoted


def test_rollback_restores_the_first_champion(trained):
    project, first = trained
    first_tag = first.output_for_node("candidate_model")["tag"]
    assert first.output_for_node("gate_report")["sampled"] is None
    # The comparisons on a sample past bootstrap_rows (as at 1000x), said in the report.
    sampling = dataclasses.replace(project, defs=build_definitions(
        str(project.home), "bank", GateResource(min_auc=0.6, bootstrap_rows=1000)))
    second = sampling.train(seed=7)
    assert second.success
    report = second.output_for_node("gate_report")
    test_rows = second.output_for_node("model_evaluation")["metrics"]["rows"]
    assert report["sampled"].startswith("comparison on a deterministic sample of 1,000 of ")
    assert report["sampled"].endswith(f"slices on 1,000 of {test_rows:,} rows (seed 0; "
                                      "bootstrap_rows 1,000)")
    assert report["comparison"]["rows"] == 1000 < test_rows
    slices = check_results(second)["gate_report:slices_hold_up"]
    assert "worst slice vs the champion" in slices.description  # judged per slice, paired
    assert slices.metadata["worst_slice_delta_ci_high"].value >= -0.05
    second_tag = second.output_for_node("candidate_model")["tag"]
    registry = project.registry()
    assert registry.champion() == second_tag != first_tag
    result = orchestration.run_job(project.defs, project.instance, "rollback")
    assert result.success
    assert registry.champion() == first_tag
    last = registry.history()[-1]
    assert (last["action"], last["tag"], last["previous"]) == ("rollback", first_tag, second_tag)
    record = project.instance.get_latest_materialization_event(
        __import__("dagster").AssetKey("champion"))
    assert record.asset_materialization.metadata["champion"].value == first_tag


def test_crash_inside_training_leaves_the_registry_untouched(trained, monkeypatch):
    project, _ = trained
    registry = project.registry()
    champion, versions, history = registry.champion(), registry.versions(), registry.history()
    real_train = lgb.train
    calls = {"n": 0}

    def crashing_train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash inside the objective")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(lgb, "train", crashing_train)
    run = project.train(seed=3)
    assert not run.success and calls["n"] == 2
    assert "candidate_model" not in materialized(run)
    assert registry.champion() == champion
    assert registry.versions() == versions and registry.history() == history

