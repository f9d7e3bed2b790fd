"""The deploy-time check (#30): the challenger's Bento is started with `bentoml serve` and must
answer sealed test rows as offline before the champion moves; the promoted Bento is that one.
Real builds, real servers on 127.0.0.1, real Dagster runs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mlops_assets import orchestration
from mlops_assets.lib.dataset import features
from mlops_assets.lib.dataset.rows import FeatureRows
from mlops_assets.lib.governance import bento
from tests.conftest import check_results, trained_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BATCHES = ("2008-11", "2009-04", "2009-05")


def _metadata(project, asset: str) -> dict:
    import dagster as dg

    event = project.instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_the_promoted_bento_is_the_validated_one_and_one_that_cannot_serve_is_blocked(
        tmp_path, monkeypatch, bank_batches):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    project, first = trained_project(tmp_path, bank_batches, BATCHES)
    try:
        # A good challenger: validated, promoted, and its Bento is the one that was served.
        checks = check_results(first)
        assert checks["candidate_bento:serves_like_offline"].passed
        validated = _metadata(project, "candidate_bento")
        assert "answered 5 single rows and a 200-row table with the offline" in \
            validated["why"]
        champion = project.registry().champion()
        assert validated["model_tag"] == champion
        assert _metadata(project, "bento")["bento_tag"] == validated["bento_tag"]
        assert bento.bento_of(project.home, champion) == validated["bento_tag"]
        # The registry at a glance, as `mlops-assets models --json` prints it.
        listed = subprocess.run(
            [sys.executable, "-m", "mlops_assets.cli", "--home", str(project.home), "models",
             "--json"], capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        row, = [r for r in json.loads(listed.stdout) if r["version"] == champion]
        assert row["aliases"] == "production" and row["bento"] == validated["bento_tag"]
        assert 0.5 < row["test_auc"] <= 1 and row["test_log_loss"] > 0
        assert row["trained_on"] == f"{len(BATCHES)} batches {BATCHES[0]}..{BATCHES[-1]}"

        # A challenger (the same training again: it passes the gate) whose Bento lacks a
        # serving module (the build loses lib/dataset/features.py): blocked with the import error as
        # the reason, the champion stays, no Bento recorded for it.
        build = bento.build_bento

        def build_without_features(*args, **kwargs):
            built = build(*args, **kwargs)
            (built.path / "src" / "mlops_assets" / "lib" / "dataset" / "features.py").unlink()
            return built

        monkeypatch.setattr(bento, "build_bento", build_without_features)
        blocked = orchestration.run_job(
            project.defs, project.instance, "train_and_promote", raise_on_error=False,
            run_config={"ops": {"candidate_model": {"config": {"n_trials": 3, "seed": 42}},
                                "candidate_bento": {"config": {"ready_timeout_s": 60}}}})
        monkeypatch.setattr(bento, "build_bento", build)
        check = check_results(blocked)["candidate_bento:serves_like_offline"]
        assert not check.passed
        assert "exited before it was ready" in check.description
        missing = "cannot import name 'features' from 'mlops_assets.lib.dataset'"
        assert missing in check.description, check.description
        assert project.registry().champion() == champion
        challenger = _metadata(project, "candidate_bento")["model_tag"]
        assert challenger != champion and bento.bento_of(project.home, challenger) is None

        # The check itself: a good Bento passes to 1e-9, a start-up past the bound fails,
        # offline answers that differ are named (row and values).
        registry = project.registry()
        tag = champion
        model = registry.load(tag)
        built = bento.build_bento(project.home, tag, model.contract)
        rows = FeatureRows(project.stored_file("test_features"),
                                    model.contract).frame().head(20)
        records, expected = features.to_records(rows, model.contract), model.predict_frame(rows)
        good = bento.validate_bento(project.home, built.tag, records, expected)
        assert good.passed and good.max_abs_diff <= 1e-9, good.why
        slow = bento.validate_bento(project.home, built.tag, records, expected,
                                    ready_timeout_s=0.05)
        assert not slow.passed and "did not become ready within 0.05 s" in slow.why
        # Offline answers that differ from what the Bento serves are named, row and values.
        other = bento.validate_bento(project.home, bento.bento_of(project.home, tag), records,
                                     np.asarray(expected) + 1e-6)
        assert not other.passed and "for sealed test row 0, offline" in other.why
    finally:
        project.instance.dispose()
