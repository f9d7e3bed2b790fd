"""The batch-scoring asset on a real instance: files dropped in scoring/landing become
partitions through the sensor, are scored by the champion through the batch route's code path,
and their rows reach the prediction log; a bad file fails naming row, column and value."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets import orchestration
from mlops_assets.lib import io
from mlops_assets.lib.monitoring import live
from mlops_assets.lib.serving import predlog, scoring
from tests.conftest import make_project
from tests.serving.conftest import BANK, records_from, train_two_models


def test_files_are_scored_by_the_champion_and_logged(tmp_path, monkeypatch, bank_batches):
    """Also: a tick reads only the files that changed (it hashed every file every tick, as
    the landing sensor did: tens of GB waiting to be scored would outlast a tick)."""
    import os
    import time

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    read: list[str] = []
    real = io.sha256_file
    monkeypatch.setattr(io, "sha256_file", lambda path: read.append(Path(path).name)
                        or real(path))
    monkeypatch.setattr(io, "SETTLED_SECONDS", 0.2)
    project = make_project(tmp_path)
    registry = project.registry()
    champion, _, test_rows = train_two_models(project.home, bank_batches)
    registry.set_alias("production", None, "clear", "no champion yet")
    landing = project.paths.scoring_landing
    landing.mkdir(parents=True)
    sent = pd.DataFrame(records_from(test_rows, 250), columns=BANK.features)
    (landing / "june.csv").write_bytes(scoring.to_bytes(sent, "csv"))
    time.sleep(0.3)
    # Without a champion, files wait (and are not marked seen), read once.
    waiting = orchestration.tick_sensor(project.defs, project.instance, "scoring_sensor")
    assert not waiting.run_requests and "no champion yet" in waiting.skip_reason.skip_message
    waiting = orchestration.tick_sensor(project.defs, project.instance, "scoring_sensor",
                                        waiting.cursor)
    assert not waiting.run_requests and read == ["june.csv"]
    registry.promote(champion, "the champion arrives")
    (landing / "july.parquet").write_bytes(scoring.to_bytes(sent.head(100), "parquet"))
    bad = sent.head(20).astype(object)
    bad.loc[7, "age"] = 250
    (landing / "bad.csv").write_bytes(scoring.to_bytes(bad, "csv"))
    (landing / "torn.csv").write_bytes(scoring.to_bytes(sent, "csv")[:-40])  # still copying
    time.sleep(0.3)
    read.clear()
    result = orchestration.tick_sensor(project.defs, project.instance, "scoring_sensor",
                                       waiting.cursor)
    assert sorted(r.partition_key for r in result.run_requests) == \
        ["bad.csv", "july.parquet", "june.csv"]
    assert sorted(read) == ["bad.csv", "july.parquet"]  # june.csv's hash was kept
    runs = dict(zip(sorted(r.partition_key for r in result.run_requests),
                    orchestration.run_requests(project.defs, project.instance, result,
                                               "score_batch"), strict=True))
    assert not runs.pop("bad.csv").success
    assert all(r.success for r in runs.values())
    # The sensor does not ask again for what it has seen, nor reads it again.
    read.clear()
    again = orchestration.tick_sensor(project.defs, project.instance, "scoring_sensor",
                                      result.cursor)
    assert not again.run_requests and read == []
    # Rewritten in place, the same size, its modification time put back: read, asked again.
    june = landing / "june.csv"
    before = june.stat()
    text = june.read_bytes()
    june.write_bytes(text.replace(b"admin.", b"ADMIN.", 1))
    os.utime(june, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert june.stat().st_size == before.st_size and june.read_bytes() != text
    changed = orchestration.tick_sensor(project.defs, project.instance, "scoring_sensor",
                                        again.cursor)
    assert read == ["june.csv"]
    assert [r.partition_key for r in changed.run_requests] == ["june.csv"]

    model = project.registry().load(champion)
    expected = model.predict_records(sent.to_dict("records"))
    key = dg.AssetKey("batch_scores")
    for name, rows in (("june.csv", 250), ("july.parquet", 100)):
        records = project.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[name]), limit=1).records
        meta = records[0].asset_materialization.metadata
        assert meta["model_version"].value == champion and meta["dagster/row_count"].value == rows
        out = meta["output_file"].value
        scored = pd.read_csv(out) if name.endswith(".csv") else pd.read_parquet(out)
        assert list(scored.columns) == [*BANK.features, "request_id", "probability", "label",
                                        "model_version", "variant"]
        np.testing.assert_allclose(scored["probability"], expected[:rows], rtol=1e-12)
        assert meta["predicted_positive"].value == int(scored["label"].sum())
    # The bad file failed naming the row, the column and the value; nothing of it is stored.
    failed, = project.instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "bad.csv"}))
    failure = project.instance.get_records_for_run(
        failed.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records[0]
    message = failure.event_log_entry.dagster_event.step_failure_data.error.message
    assert "bad.csv" in message and "row 7, column 'age', value 250" in message, message
    assert not list(project.paths.scored.glob("bad.*"))
    # Monitoring sees the scored rows as it sees the service's.
    logged = live.flatten(predlog.read(project.paths.predictions))
    assert len(logged) == 350 and set(logged["variant"]) == {"batch"}
    assert len(live.current_features(logged, BANK)) == 350


def test_a_file_replaced_while_it_is_scored_records_the_content_scored(
        tmp_path, monkeypatch, bank_batches):
    """``batch_scores`` read the file to score it, then read it again for its data version:
    a file replaced in between (landed again by a rename) was recorded with the new
    content's hash for the old content's scores. The version is now the hash of the bytes
    scored, read once."""
    import hashlib

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    project = make_project(tmp_path)
    champion, _, test_rows = train_two_models(project.home, bank_batches)
    project.registry().promote(champion, "the champion")
    landing = project.paths.scoring_landing
    landing.mkdir(parents=True)
    sent = pd.DataFrame(records_from(test_rows, 60), columns=BANK.features)
    first, second = (scoring.to_bytes(sent.head(n), "csv") for n in (50, 60))
    path = landing / "june.csv"
    path.write_bytes(first)
    real = scoring.load_table

    def landed_again_meanwhile(body, *args):
        (landing / ".june.part").write_bytes(second)  # the landing protocol: a rename
        (landing / ".june.part").replace(path)
        return real(body, *args)

    monkeypatch.setattr(scoring, "load_table", landed_again_meanwhile)
    project.instance.add_dynamic_partitions("scoring_files", ["june.csv"])
    assert project.defs.resolve_job_def("score_batch").execute_in_process(
        instance=project.instance, partition_key="june.csv").success
    record = project.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("batch_scores"),
                              asset_partitions=["june.csv"]), limit=1).records[0]
    event = record.asset_materialization
    assert event.metadata["dagster/row_count"].value == 50
    assert event.tags["dagster/data_version"] == hashlib.sha256(first).hexdigest()
