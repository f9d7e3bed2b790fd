"""The dataset stage over several batches: sealed split, features and EDA report."""

from __future__ import annotations

import pandas as pd

from mlops_assets.config import CONTENT, ROW_KEY
from mlops_assets.lib.dataset import split
from tests.conftest import check_results, make_project, materialized

DATASET_ASSETS = {
    "train_set", "validation_set", "test_set", "train_features", "validation_features",
    "test_features", "eda_report",
}


def test_split_features_and_eda_over_batches(project, bank_batches):
    for key in ("2009-03", "2009-06", "2008-12"):
        project.land(key, bank_batches[key])
    _, runs = project.ingest()
    assert len(runs) == 3 and all(r.success for r in runs)
    build = project.build_dataset()
    assert build.success and DATASET_ASSETS <= materialized(build)
    checks = check_results(build)
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    assert {"test_set:test_set_is_sealed", "train_features:feature_schema",
            "train_features:no_sealed_test_rows", "test_features:feature_schema"} <= set(checks)
    train = project.output(build, "train_set")
    test = project.output(build, "test_set")
    assert len(train) + len(test) + len(project.output(build, "validation_set")) \
        == 282 + 715 + 10
    sealed = split.read_sealed(project.paths.sealed_test)
    assert set(sealed[CONTENT]) == set(test[CONTENT]) and len(sealed) == test[CONTENT].nunique()
    eda = [e for e in build.get_asset_materialization_events()
           if e.asset_key.to_user_string() == "eda_report"][0]
    meta = eda.materialization.metadata
    html = meta["path"].value
    assert "<html" in open(html).read(2000).lower()
    assert "| euribor3m" in meta["key_statistics"].value


def test_a_sealed_content_is_test_whichever_split_its_hash_would_choose(project,
                                                                        bank_batches):
    project.land("2009-03", bank_batches["2009-03"])
    project.ingest()
    assert project.build_dataset().success
    # Seal a training row's content by hand (as a contract change of split fractions would
    # leave it): the next build puts that content in test, never in training.
    train_row = pd.read_parquet(project.stored_file("train_set")).iloc[:1]
    sealed = split.read_sealed(project.paths.sealed_test)
    pd.concat([sealed, train_row[[CONTENT, ROW_KEY, "_batch"]]]).to_parquet(
        project.paths.sealed_test, index=False)
    build = project.build_dataset()
    assert all(c.passed for c in check_results(build).values())
    content = train_row[CONTENT].iat[0]
    assert content in set(project.output(build, "test_set")[CONTENT])
    assert content not in set(project.output(build, "train_set")[CONTENT])
    assert content not in set(project.output(build, "train_features")[CONTENT])


def test_adult_contract_materializes_the_same_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    from mlops_assets.lib.dataset import data

    adult = make_project(tmp_path, "adult")
    batches = list(data.source_batches(adult.contract).items())[:3]
    for key, df in batches:
        adult.land(key, df)
    _, runs = adult.ingest()
    assert len(runs) == 3 and all(r.success for r in runs)
    assert all(check_results(r)["raw_batch:raw_batch_schema"].passed for r in runs)
    build = adult.build_dataset()
    assert build.success and DATASET_ASSETS <= materialized(build)
    assert all(c.passed for c in check_results(build).values())
    features = adult.output(build, "train_features")
    assert "native-country" in features.columns and "income" not in features.columns
    adult.instance.dispose()
