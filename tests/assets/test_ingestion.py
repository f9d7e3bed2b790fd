"""Real materializations on a real SQLite instance: landing -> sensor -> ingestion runs."""

from __future__ import annotations

import stat

import dagster as dg
import pandas as pd

from mlops_assets.lib import io
from tests.conftest import check_results, materialized

VALIDATED = {"validated_batch", "quarantined_rows"}


def _one_run(project):
    tick, runs = project.ingest()
    assert len(runs) == 1, tick.skip_reason
    return runs[0]


def test_good_batch_is_ingested_versioned_and_backed_up(project, bank_batches):
    path = project.land("2009-03", bank_batches["2009-03"])
    run = _one_run(project)
    assert run.success
    assert {"raw_batch", *VALIDATED} <= materialized(run)
    checks = check_results(run)
    assert checks["raw_batch:raw_batch_schema"].passed
    assert checks["validated_batch:invalid_fraction_below_limit"].passed
    sha = io.sha256_file(path)
    record = project.instance.get_latest_data_version_record(
        dg.AssetKey("raw_batch"), partition_key="2009-03"
    )
    assert record.asset_materialization.tags["dagster/data_version"] == sha
    meta = record.asset_materialization.metadata
    assert meta["dagster/row_count"].value == 282
    backup = project.paths.backup / "2009-03" / f"{sha}.csv"
    assert backup.read_bytes() == path.read_bytes()
    assert not backup.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_empty_file_fails_the_blocking_check_and_stops_downstream(project):
    project.paths.landing.mkdir(parents=True)
    (project.paths.landing / "2009-04.csv").write_bytes(b"")
    run = _one_run(project)
    check = check_results(run)["raw_batch:raw_batch_schema"]
    assert not check.passed
    assert check.description.startswith("empty file:") and "2009-04.csv" in check.description
    assert materialized(run) == {"raw_batch"}


def test_missing_column_is_named_and_blocks(project, bank_batches):
    project.land("2009-03", bank_batches["2009-03"].drop(columns=["euribor3m"]))
    run = _one_run(project)
    check = check_results(run)["raw_batch:raw_batch_schema"]
    assert not check.passed
    assert "missing column 'euribor3m'" in check.description
    assert not VALIDATED & materialized(run)


def test_wrong_dtypes_block_with_failure_cases(project, bank_batches):
    df = bank_batches["2009-03"].copy()
    df["age"] = "forty"
    project.land("2009-03", df)
    run = _one_run(project)
    check = check_results(run)["raw_batch:raw_batch_schema"]
    assert not check.passed
    assert "age: not numeric (more than 5% of values)" in check.description
    assert "forty" in check.metadata["failure_cases"].value
    # every value failed: all are counted, the first are shown
    assert check.metadata["failure_count"].value == 282
    assert "(232 more rows)" in check.metadata["failure_cases"].value
    assert not VALIDATED & materialized(run)


def test_out_of_range_rows_are_quarantined_with_reasons(project, bank_batches):
    df = bank_batches["2009-03"].copy()
    df.loc[[3, 50, 100, 150, 200], "age"] = ["-4", "150", "999", "0", "121"]
    project.land("2009-03", df)
    run = _one_run(project)
    assert run.success and VALIDATED <= materialized(run)
    assert check_results(run)["validated_batch:invalid_fraction_below_limit"].passed
    quarantined = project.output(run, "quarantined_rows", "2009-03")
    valid = project.output(run, "validated_batch", "2009-03")
    assert len(quarantined) == 5 and len(valid) == 282 - 5
    assert quarantined["_row_key"].tolist() == [f"2009-03:{i:06d}" for i in (3, 50, 100, 150, 200)]
    assert quarantined["reason"].str.startswith("age: out of range (17.0, 120.0)").all()


def test_a_column_type_is_judged_on_the_whole_batch_not_on_a_chunk(project, bank_batches,
                                                                    monkeypatch):
    """The raw check's type rule is about a column of the batch: 10 ages that do not parse,
    all in the first 100-row chunk (10% of it, 3.5% of the batch's 282 rows), are rows for
    the quarantine, not a column of the wrong type that blocks the batch."""
    monkeypatch.setattr(io, "CHUNK_ROWS", 100)
    df = bank_batches["2009-03"].copy()
    df.loc[:9, "age"] = "old"
    project.land("2009-03", df)
    run = _one_run(project)
    checks = check_results(run)
    assert checks["raw_batch:raw_batch_schema"].passed, checks["raw_batch:raw_batch_schema"]
    assert checks["raw_batch:raw_batch_schema"].metadata["rows"].value == 282
    assert checks["validated_batch:invalid_fraction_below_limit"].passed
    quarantined = project.output(run, "quarantined_rows", "2009-03")
    assert quarantined["_row_key"].tolist() == [f"2009-03:{i:06d}" for i in range(10)]
    assert (quarantined["reason"] == "age: not a number 'old'").all()


def test_too_many_invalid_rows_fail_the_fraction_check(project, bank_batches):
    df = bank_batches["2008-10"].copy()  # 67 rows; 10 bad = 15% > 5%
    df.loc[:9, "job"] = "astronaut"
    project.land("2008-10", df)
    run = _one_run(project)
    check = check_results(run)["validated_batch:invalid_fraction_below_limit"]
    assert not check.passed
    assert check.metadata["quarantined"].value == 10
    assert "14.93% of 67 rows invalid (limit 5.00%)" == check.description


def test_a_file_landed_twice_is_ingested_once(project, bank_batches):
    project.land("2008-12", bank_batches["2008-12"])
    assert len(project.ingest()[1]) == 1
    project.land("2008-12", bank_batches["2008-12"])  # landed again, same content
    tick, runs = project.ingest()
    assert runs == []
    assert "2008-12: already ingested with this content" in tick.skip_reason.skip_message
    # The same content under another name is a batch of its own (the split sets its rows
    # aside as duplicates of 2008-12's); landed again, it too is ingested once.
    project.land("2008-12-copy", bank_batches["2008-12"])
    assert [r.success for r in project.ingest()[1]] == [True]
    assert project.ingest()[1] == []
    assert project.instance.get_dynamic_partitions("batches") == ["2008-12", "2008-12-copy"]
    # New content under the same name is a new version of the batch, ingested once more.
    project.land("2008-12", bank_batches["2008-12"].head(5))
    assert len(project.ingest()[1]) == 1


def test_a_batch_is_ingested_in_chunks_as_it_would_be_whole(project, bank_batches,
                                                              monkeypatch):
    """100-row chunks over a 282-row batch with bad values in the first and last chunks: the
    same text, valid rows, row keys and quarantine (with reasons) as reading and validating
    the batch at once, and the counts of the whole batch in the checks and metadata."""
    from mlops_assets.lib.dataset import data

    monkeypatch.setattr(io, "CHUNK_ROWS", 100)
    df = bank_batches["2009-03"].copy()
    df.loc[[3, 250, 281], "age"] = ["-4", "999", "old"]
    path = project.land("2009-03", df)
    run = _one_run(project)
    assert run.success and VALIDATED <= materialized(run)
    whole = data.validate_rows(data.parse_batch(data.read_batch(path, project.contract),
                                                project.contract, "2009-03"), project.contract)
    valid = project.output(run, "validated_batch", "2009-03")
    quarantined = project.output(run, "quarantined_rows", "2009-03")
    pd.testing.assert_frame_equal(valid, whole.valid)
    pd.testing.assert_frame_equal(quarantined, whole.quarantined)
    assert quarantined["_row_key"].tolist() == ["2009-03:000003", "2009-03:000250",
                                                "2009-03:000281"]
    assert quarantined["reason"].tolist()[2] == "age: not a number 'old'"
    raw = project.output(run, "raw_batch", "2009-03")
    pd.testing.assert_frame_equal(raw, data.read_batch(path, project.contract))
    check = check_results(run)["raw_batch:raw_batch_schema"]
    assert check.passed and check.metadata["rows"].value == 282  # every chunk was judged
    meta = next(e for e in run.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "validated_batch").materialization.metadata
    assert meta["dagster/row_count"].value == 279 and meta["quarantined"].value == 3
