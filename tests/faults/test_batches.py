"""Faults at the data's door: a batch blocked by its check, a half-written landing file, the
same rows landed again under another name with CRLF line endings, a batch re-landed with fewer
rows, and files that are empty, header-only or use the wrong separator. Each runs the real
landing sensor and jobs on a real instance and asserts what is stored afterwards."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import orchestration
from mlops_assets.config import BATCH, CONTENT, ROW_KEY
from mlops_assets.defs.dataset.assets import batch_eligibility
from mlops_assets.defs.ingestion.sensors import CONTENT_TAG, LandedConfig, ingest, interrupted
from mlops_assets.lib.dataset import data, split
from tests.conftest import check_results

GOOD = ("2008-05", "2008-06")


@pytest.fixture
def small(bank_batches) -> dict[str, pd.DataFrame]:
    """Short batches, so each build takes seconds."""
    return {k: bank_batches[k].head(1500).reset_index(drop=True)
            for k in ("2008-05", "2008-06", "2008-07")}


def _with_unseen_jobs(df: pd.DataFrame, share: float) -> pd.DataFrame:
    bad = df.copy()
    bad.loc[: int(len(bad) * share) - 1, "job"] = "astronaut"
    return bad


def _splits(project, build) -> dict[str, pd.DataFrame]:
    return {s: project.output(build, f"{s}_set")
            for s in ("train", "validation", "test")}


def test_a_blocked_batch_reaches_nothing_downstream_until_it_passes(project, small):
    for key in GOOD:
        project.land(key, small[key])
    project.land("2008-07", _with_unseen_jobs(small["2008-07"], 0.3))
    _, runs = project.ingest()
    blocked = next(r for r in runs if r.dagster_run.tags["batch"] == "2008-07")
    assert not check_results(blocked)["validated_batch:invalid_fraction_below_limit"].passed
    # The valid rows of the blocked batch are stored (the check runs after the asset) ...
    assert (project.paths.storage / "validated_batch" / "2008-07"
            / f"{blocked.run_id}.parquet").is_file()
    build = project.build_dataset()
    assert build.success
    parts = _splits(project, build)
    # ... but nothing of it reaches a split, the features, the sealed manifest.
    for name, part in parts.items():
        assert "2008-07" not in set(part[BATCH]), name
        assert set(part[BATCH]) <= set(GOOD)
    for name in ("train_features", "validation_features", "test_features"):
        assert not project.output(build, name)[ROW_KEY].str.startswith("2008-07").any()
    sealed = split.read_sealed(project.paths.sealed_test)
    assert not sealed[BATCH].eq("2008-07").any() and len(sealed) == parts["test"][CONTENT].nunique()
    status = batch_eligibility(project.instance).set_index("batch")
    assert not status.loc["2008-07", "included"]
    assert "invalid_fraction_below_limit" in status.loc["2008-07", "reason"]
    assert "30.00% of 1500 rows invalid" in status.loc["2008-07", "reason"]
    meta = next(e for e in build.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "train_set").materialization.metadata
    assert meta["excluded_batches"].value == 1 and "2008-07" in meta["batch_status"].value
    # A later build still leaves it out; re-landed clean, it passes and is included.
    assert "2008-07" not in set(_splits(project, project.build_dataset())["train"][BATCH])
    project.land("2008-07", small["2008-07"])
    _, runs = project.ingest()
    assert len(runs) == 1 and runs[0].success
    rebuilt = _splits(project, project.build_dataset())
    assert "2008-07" in set(rebuilt["train"][BATCH]) | set(rebuilt["test"][BATCH])


def test_a_good_batch_re_landed_bad_is_excluded_not_served_stale(project, small):
    for key in GOOD:
        project.land(key, small[key])
    project.ingest()
    assert "2008-06" in set(_splits(project, project.build_dataset())["train"][BATCH])
    project.land("2008-06", _with_unseen_jobs(small["2008-06"], 0.5))
    _, runs = project.ingest()
    assert len(runs) == 1 and not runs[0].success
    build = project.build_dataset()
    # The earlier, passing rows of 2008-06 are still stored but are no longer the batch.
    assert "2008-06" not in set(_splits(project, build)["train"][BATCH])
    reason = batch_eligibility(project.instance).set_index("batch").loc["2008-06", "reason"]
    assert reason.startswith("failed invalid_fraction_below_limit")


def test_a_half_written_file_waits_and_a_part_file_is_ignored(project, small):
    whole = small["2008-05"].to_csv(sep=";", index=False).encode()
    project.paths.landing.mkdir(parents=True)
    torn = project.paths.landing / "2008-05.csv"
    torn.write_bytes(whole[: int(len(whole) * 0.4)])  # a copy that died at 40%
    (project.paths.landing / "2008-06.csv.part").write_bytes(whole)  # still being written
    result, runs = project.ingest()
    assert runs == [] and result.skip_reason is not None
    message = result.skip_reason.skip_message
    assert "2008-05: incomplete: the last line of 2008-05.csv has no newline" in message
    assert project.instance.get_dynamic_partitions("batches") == []
    torn.write_bytes(whole)  # the copy completes
    _, runs = project.ingest()
    assert len(runs) == 1 and runs[0].success
    assert len(project.output(runs[0], "raw_batch", "2008-05")) == 1500


def _test_rows_with_a_twin_in_train(parts, contract) -> int:
    train = set(split.content_keys(parts["train"], contract))
    return int(split.content_keys(parts["test"], contract).isin(train).sum())


def test_the_same_rows_landed_again_with_crlf_are_quarantined_as_duplicates(project, small):
    for key in GOOD:
        project.land(key, small[key])
    project.ingest()
    before = _splits(project, project.build_dataset())
    copy = small["2008-05"].to_csv(sep=";", index=False, lineterminator="\r\n").encode()
    (project.paths.landing / "2008-05-resent.csv").write_bytes(copy)
    _, runs = project.ingest()
    assert len(runs) == 1 and runs[0].success  # new bytes: ingested as a batch ...
    build = project.build_dataset()
    assert build.success
    parts = _splits(project, build)
    duplicates = build.output_for_node("sealed_split", "duplicate_rows")
    # ... whose every row is set aside, naming the row it repeats; none reaches a split.
    assert len(duplicates) == 1500 and set(duplicates[BATCH]) == {"2008-05-resent"}
    first = duplicates.sort_values(ROW_KEY).iloc[0]
    assert first["reason"] == "duplicate of row 2008-05:000000 (batch 2008-05)"
    for name, part in parts.items():
        assert "2008-05-resent" not in set(part[BATCH])
        assert len(part) == len(before[name])
    # The copy adds no twin across the sealed split. (Repeats inside one batch, different
    # customers with the same answers, are left as they were.)
    contract = project.contract
    assert _test_rows_with_a_twin_in_train(parts, contract) \
        == _test_rows_with_a_twin_in_train(before, contract)


def test_a_batch_re_landed_with_fewer_rows_names_the_remedy(project, small):
    project.land("2008-05", small["2008-05"])
    project.ingest()
    assert project.build_dataset().success
    project.land("2008-05", small["2008-05"].head(700))
    _, runs = project.ingest()
    assert len(runs) == 1 and runs[0].success
    build = project.build_dataset()
    assert not build.success
    check = check_results(build)["test_set:test_set_is_sealed"]
    assert not check.passed
    assert "sealed test rows of batch(es) ['2008-05'] are no longer in the data" \
        in check.description
    assert "re-land the batch as it was" in check.description
    assert check.metadata["sealed_rows_missing"].value > 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file: "),
        (b"age;job;marital\n", None),  # header only: filled in below
        (None, "wrong separator: "),
    ],
    ids=["zero-bytes", "header-only", "wrong-separator"],
)
def test_file_level_problems_are_named(project, small, content, expected):
    project.paths.landing.mkdir(parents=True)
    path = project.paths.landing / "2008-05.csv"
    if content is None:
        content = small["2008-05"].to_csv(sep=",", index=False).encode()
    elif content.startswith(b"age"):
        content = (";".join(small["2008-05"].columns) + "\n").encode()
        expected = "no rows: "
    path.write_bytes(content)
    _, runs = project.ingest()
    check = check_results(runs[0])["raw_batch:raw_batch_schema"]
    assert not check.passed and check.description.startswith(expected), check.description
    assert str(path) in check.description
    if expected == "wrong separator: ":
        assert "looks separated by ','" in check.description and "says ';'" in check.description
    assert not batch_eligibility(project.instance)["included"].any()


def test_landing_protocol_writer_leaves_no_partial_file(tmp_path, small):
    contract_df = small["2008-05"]
    written = data.write_batch(contract_df, tmp_path, "2008-05", ";")
    assert [p.name for p in tmp_path.iterdir()] == ["2008-05.csv"]
    assert data.incomplete_reason(written) is None


def test_a_folder_or_a_broken_link_in_the_landing_folder_is_skipped_with_the_reason(project,
                                                                                    small):
    project.paths.landing.mkdir(parents=True)
    (project.paths.landing / "x.csv").mkdir()
    (project.paths.landing / "gone.csv").symlink_to(project.paths.landing / "nowhere.csv")
    project.land("2008-05", small["2008-05"])
    _, runs = project.ingest()
    assert [r.success for r in runs] == [True]  # the others do not stop the good batch
    tick, runs = project.ingest()
    assert runs == []
    message = tick.skip_reason.skip_message
    assert "x: skipped: x.csv is a folder" in message
    assert "gone: skipped: gone.csv is a broken link" in message


def test_an_interrupted_ingestion_is_retried_once_however_late_its_run_is_seen_ending(project,
                                                                                      small):
    """The rerun after Ctrl-C, under load (seen in a suite run beside a CPU hog): the driver
    run of two batches died; one batch's own run was still 'starting' when the sensor first
    looked and was marked failed by run monitoring only later, outside the window of recently
    ended drivers: it was never ingested again and the demo waited 900 s for it. The other was
    asked for again on every tick while its first retry sat in the queue."""
    for key in ("2008-05", "2008-06"):
        project.land(key, small[key])
    first = orchestration.tick_landing_sensor(project.defs, project.instance)
    driver_job = project.defs.resolve_job_def("ingest_landed")
    sha = {}
    for request in first.run_requests:  # both drivers died
        project.instance.create_run_for_job(driver_job, run_config=request.run_config,
                                            status=dg.DagsterRunStatus.FAILURE)
        config = LandedConfig(**request.run_config["ops"]["ingest_landed_batches"]["config"])
        sha.update(zip(config.batches, config.contents, strict=True))
    assert sorted(sha) == ["2008-05", "2008-06"]
    child = project.instance.create_run_for_job(
        project.defs.resolve_job_def("ingest_batch"), status=dg.DagsterRunStatus.STARTING,
        tags={"batch": "2008-05", CONTENT_TAG: sha["2008-05"]})

    def tick(cursor):
        result = orchestration.tick_landing_sensor(project.defs, project.instance, cursor)
        asked = [b for r in result.run_requests for b in
                 r.run_config["ops"]["ingest_landed_batches"]["config"]["batches"]]
        return result, asked

    second, asked = tick(first.cursor)
    assert asked == ["2008-06"]  # 2008-05's own run has not ended: not decided yet
    # The retry waits to start: the next ticks do not ask for it again.
    project.instance.create_run_for_job(driver_job, run_config=second.run_requests[0].run_config,
                                        status=dg.DagsterRunStatus.NOT_STARTED)
    third, asked = tick(second.cursor)
    assert asked == []
    # 2008-05's run is marked failed (no step failed, no check failed: interrupted) long
    # after its driver ended.
    project.instance.report_run_failed(child)
    late = json.loads(third.cursor)
    late["checked_until"] += 3600
    fourth, asked = tick(json.dumps(late))
    assert asked == ["2008-05"]
    project.instance.create_run_for_job(driver_job, run_config=fourth.run_requests[0].run_config,
                                        status=dg.DagsterRunStatus.NOT_STARTED)
    _, asked = tick(fourth.cursor)
    assert asked == []


def test_a_batch_run_interrupted_before_it_started_is_ended_by_its_driver(project, small,
                                                                          monkeypatch):
    """Ctrl-C in the driver between a batch run's creation and its start left that run
    NOT_STARTED: no worker for run monitoring to find gone, so it ended only at the start
    timeout (180 s), and the rerun of the demo waited that long for it (seen in a suite run).
    The driver now ends it as interrupted, and the next tick asks for the batch again."""
    project.land("2008-05", small["2008-05"])
    first = orchestration.tick_landing_sensor(project.defs, project.instance)
    config = LandedConfig(**first.run_requests[0].run_config["ops"]["ingest_landed_batches"]
                          ["config"])
    instance, created = project.instance, []
    create = instance.create_run_for_job

    def interrupted_after_creation(*args, **kwargs):
        created.append(create(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(instance, "create_run_for_job", interrupted_after_creation)
    with pytest.raises(KeyboardInterrupt):
        ingest(project.defs.resolve_job_def("ingest_batch"), instance, config.requests())
    monkeypatch.undo()
    run = instance.get_run_by_id(created[0].run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert interrupted(instance, run)  # no check or step judged the batch: ingest it again
    late = json.loads(first.cursor)
    late["pending"] = ["2008-05:" + config.contents[0]]
    again = orchestration.tick_landing_sensor(project.defs, instance, json.dumps(late))
    assert [b for r in again.run_requests for b in
            r.run_config["ops"]["ingest_landed_batches"]["config"]["batches"]] == ["2008-05"]


def test_a_backfill_is_shared_among_the_tick_s_two_runs_by_size(project, bank_batches):
    """Bank's first months landed at once (a backfill): the two ingest_landed runs of the
    tick (one per core) get about as many bytes each. Shared by count, the first run got
    the three large months and the second the three small ones, 2.1x its bytes."""
    months = list(bank_batches)[:6]
    sizes = {key: project.land(key, bank_batches[key]).stat().st_size for key in months}
    tick = orchestration.tick_landing_sensor(project.defs, project.instance)
    runs = [LandedConfig(**r.run_config["ops"]["ingest_landed_batches"]["config"]).batches
            for r in tick.run_requests]
    assert len(runs) == 2 and sorted(b for run in runs for b in run) == sorted(months)
    loads = [sum(sizes[b] for b in run) for run in runs]
    assert abs(loads[0] - loads[1]) <= max(sizes.values()), (runs, loads)


def test_a_file_that_cannot_be_read_is_excluded_naming_why_and_not_promised_again(project):
    """A landed file that is not UTF-8 fails raw_batch with an error naming the file (as
    landed, not only the kept copy the step read), so
    the batch's checks never run. The sensor does not ingest it again (a batch failed by its
    own error is not retried), so the reason the batch is excluded must say what failed,
    not that the landing sensor will ingest it again (what it said)."""
    project.paths.landing.mkdir(parents=True)
    (project.paths.landing / "2008-05.csv").write_bytes(b"age;job\n41;\xff\n")
    _, runs = project.ingest()
    assert len(runs) == 1 and not runs[0].success
    _, again = project.ingest()
    assert again == []  # not retried
    reason = batch_eligibility(project.instance).set_index("batch").loc["2008-05", "reason"]
    # The file the operator landed, then the kept copy the step read.
    landed, kept = project.paths.landing / "2008-05.csv", project.paths.backup / "2008-05"
    assert f"raw_batch: batch file {landed} (kept as {kept}/" in reason, reason
    assert "cannot be parsed as CSV: invalid utf-8" in reason, reason
    assert "ingests the batch again" not in reason, reason


def test_a_tick_reads_only_the_landed_files_that_changed(project, small, monkeypatch):
    """Each tick hashes the landed files to see new content. It hashed every file every
    tick: at 1000x (26 files, 4.9 GB) an idle tick took 3.2 s of CPU, every 30 s, and a
    landing folder of tens of GB would outlast the sensor's time limit. A file's hash is
    kept (in the cursor) with its identity (device, inode, size, modification and change
    times) and read again only when that changes: rewritten in place with its size and
    modification time put back, replaced by a rename, or changed too recently to tell."""
    import os
    import time

    from mlops_assets.lib import io

    read: list[str] = []
    real = io.sha256_file
    monkeypatch.setattr(io, "sha256_file", lambda path: read.append(path.name) or real(path))
    monkeypatch.setattr(io, "SETTLED_SECONDS", 0.2)
    paths = {key: project.land(key, frame) for key, frame in small.items()}
    time.sleep(0.3)
    project.ingest()
    assert sorted(read) == sorted(f"{k}.csv" for k in small)
    read.clear()
    tick, runs = project.ingest()
    assert read == [] and runs == [] and tick.skip_reason  # an idle tick reads no file
    # Rewritten in place, the same size, its modification time put back: read again.
    path = paths["2008-05"]
    before = path.stat()
    text = path.read_bytes()
    path.write_bytes(text.replace(b"admin.", b"ADMIN.", 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    # Landed again by the protocol (a rename), the same content: read again, not ingested.
    project.land("2008-06", small["2008-06"])
    time.sleep(0.3)
    tick, runs = project.ingest()
    assert sorted(read) == ["2008-05.csv", "2008-06.csv"]
    assert [r.dagster_run.tags["batch"] for r in runs] == ["2008-05"]
    read.clear()
    # Changed within SETTLED_SECONDS (here an hour): hashed, and hashed again next tick.
    monkeypatch.setattr(io, "SETTLED_SECONDS", 3600)
    project.land("2008-07", small["2008-07"].head(100))
    project.ingest()
    project.ingest()
    assert read == ["2008-07.csv", "2008-07.csv"]


def test_a_file_gone_between_listing_and_hashing_does_not_fail_the_tick(tmp_path, monkeypatch):
    """A sensor lists the landed files, then hashes them: a file removed in between (an
    operator cleaning up, or moving it elsewhere) failed the whole tick
    with FileNotFoundError, every other file waiting with it. It is now left out of this
    tick (looked at again next tick, if it is back); the others are hashed as usual."""
    from mlops_assets.lib import io

    here = tmp_path / "here.csv"
    here.write_text("a,b\n1,2\n")
    gone = tmp_path / "gone.csv"
    hashes, kept = io.content_hashes({"here": here, "gone": gone}, {})
    assert hashes == {"here": io.sha256_file(here)} and list(kept) in ([], ["here"])
    # Gone while it was read (its identity taken, its content not): left out too.
    real = io.sha256_file

    def vanishing(path):
        if path.name == "late.csv":
            path.unlink()
        return real(path)

    late = tmp_path / "late.csv"
    late.write_text("a,b\n3,4\n")
    monkeypatch.setattr(io, "sha256_file", vanishing)
    hashes, kept = io.content_hashes({"here": here, "late": late}, {})
    assert list(hashes) == ["here"] and "late" not in kept
