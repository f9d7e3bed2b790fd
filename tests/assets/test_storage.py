"""Stored versions: every materialization is written once under its run and never
overwritten; the retention job deletes only what nothing refers to any more."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

from mlops_assets import orchestration
from mlops_assets.lib import retention


def _versions(project, asset: str, partition: str | None = None) -> set[str]:
    folder = project.paths.storage / asset / (partition or "")
    return {p.name.split(".")[0] for p in folder.glob("*.*")}


def _collect(project, **config) -> dg.ExecuteInProcessResult:
    result = orchestration.run_job(project.defs, project.instance, "collect_storage",
                                   run_config={"ops": {"collect_stored_versions": {
                                       "config": {"grace_hours": 0, **config}}}})
    assert result.success
    return result


def test_retention_keeps_what_is_referred_to_and_deletes_the_rest(project, bank_batches):
    first = bank_batches["2008-05"].head(1500)
    project.land("2008-05", first)
    (v1,) = project.ingest()[1]
    project.land("2008-05", first.head(1400))  # re-landed: a second version beside the first
    (v2,) = project.ingest()[1]
    assert _versions(project, "validated_batch", "2008-05") == {v1.run_id, v2.run_id}
    build1 = project.build_dataset()
    model = project.train(trials=1)
    tag = model.output_for_node("candidate_model")["tag"]
    meta = project.registry().get(tag).info.metadata
    assert meta["dataset_run_id"] == build1.run_id
    assert meta["batch_versions"] == [{"batch": "2008-05", "data_version": v2.dagster_run.tags[
        "mlops/content"], "version": v2.run_id}]
    build2 = project.build_dataset()

    dry = _collect(project, dry_run=True)
    assert _versions(project, "validated_batch", "2008-05") == {v1.run_id, v2.run_id}
    assert dry.success
    _collect(project)
    # The first landing is superseded and nothing refers to it: gone, in every asset.
    for asset in ("raw_batch", "validated_batch", "quarantined_rows"):
        assert _versions(project, asset, "2008-05") == {v2.run_id}, asset
    # The first build is superseded, but the registered model was trained on it.
    assert {build1.run_id, build2.run_id} <= _versions(project, "train_features")
    assert {build1.run_id, build2.run_id} <= _versions(project, "test_set")
    # The second build and the model's own run are the latest.
    assert model.run_id in _versions(project, "candidate_model")
    assert project.build_dataset().success  # what is kept still builds


def test_the_rule_keeps_what_was_latest_when_the_oldest_run_in_flight_started(tmp_path):
    root = tmp_path / "storage"
    for name in ("a/p/r1.parquet", "a/p/r2.parquet", "a/p/r3.parquet", "a/p/orphan.parquet",
                 "a/p/model.parquet", "b/r1.json", "b/r2.json", "a/.scratch/x.parquet"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    mats = [retention.Materialization("a", "p", "r1", 10), retention.Materialization(
        "a", "p", "r2", 20), retention.Materialization("a", "p", "r3", 30),
        retention.Materialization("b", None, "r1", 10), retention.Materialization(
            "b", None, "r2", 40)]
    files = list(retention.stored(root))
    assert {(f.asset, f.partition, f.run_id) for f in files} >= {("a", "p", "r1"),
                                                                ("b", None, "r2")}
    assert not any(".scratch" in str(f.path) for f in files)
    # A run in flight since 25 may have pinned r2 (latest then): r2 and r3 stay, r1 goes.
    # Files written after the cutoff are never deleted (a run may be writing them).
    assert retention.collectable(files, mats, cutoff=25, runs=set(),
                                 partition_versions=set()) == []
    later = time.time() + 1
    for f in files:  # written long ago
        os.utime(f.path, (later - 1000, later - 1000))
    mats = [retention.Materialization(m.asset, m.partition, m.run_id, later - 100 + m.timestamp)
            for m in mats]
    gone = retention.collectable(files, mats, cutoff=later - 75, runs=set(),
                                 partition_versions={("p", "model")})
    got = {f.path.relative_to(root).as_posix() for f in gone}
    # b: r1 was the latest at the cutoff (a run in flight may read it), so it stays too.
    assert got == {"a/p/r1.parquet", "a/p/orphan.parquet"}
    assert Path(root / "a/p/r1.parquet").exists()  # the rule only lists; the job deletes
