"""The columnar ingestion (Polars, Pandera's Polars backend) against the pandas path it
replaced (tests/oracle_ingestion.py): the same text, row keys, valid rows with the same
types, and the same quarantined rows with the same reasons, on every Bank batch and on a
10x sample with planted faults, read in chunks smaller than the batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from mlops_assets.config import ROW_KEY, load_contract
from mlops_assets.lib.dataset import data
from mlops_assets.schemas import failure_cases, failure_sample, raw_schema
from tests import oracle_ingestion as oracle

BANK = load_contract("bank")


def _both(path, contract, batch: str, rows: int):
    """(text, valid, quarantined) by the oracle and by the columnar path, chunk by chunk."""
    out = {}
    for name, read, check in (
        ("oracle", lambda: oracle.read_batch_chunks(path, contract, rows),
         lambda chunk, start: oracle.validate_rows(
             oracle.parse_batch(chunk, contract, batch, start), contract)),
        ("columnar", lambda: (f.to_pandas() for f in data.read_batch_frames(path, contract,
                                                                            rows)),
         lambda chunk, start: data.validate_rows(
             data.parse_batch(chunk, contract, batch, start), contract)),
    ):
        texts, valid, quarantined, start = [], [], [], 0
        for chunk in read():
            texts.append(chunk.reset_index(drop=True))
            result = check(chunk, start)
            valid.append(result.valid)
            quarantined.append(result.quarantined)
            start += len(chunk)
        # An empty quarantine's reason column is float64 in pandas' hands (no values):
        # stored, it is text either way.
        quarantined = [q.astype({"reason": object}) for q in quarantined]
        out[name] = tuple(pd.concat(f, ignore_index=True) for f in (texts, valid, quarantined))
    return out["oracle"], out["columnar"]


def _assert_same(expected, got):
    for what, e, g in zip(("text", "valid", "quarantined"), expected, got, strict=True):
        pd.testing.assert_frame_equal(g, e, obj=what)


@pytest.mark.parametrize("rows", [1_000, 200_000])
def test_every_bank_batch_is_ingested_as_the_pandas_path_did(tmp_path, bank_batches, rows):
    for batch, frame in bank_batches.items():
        path = data.write_batch(frame, tmp_path, batch, BANK.source.separator)
        expected, got = _both(path, BANK, batch, rows)
        _assert_same(expected, got)


def _planted(bank_batches, copies: int = 10) -> tuple[pd.DataFrame, dict[int, str]]:
    """A month ten times over (new rows each time), with faults planted at known rows."""
    base = bank_batches["2008-11"]
    frame = pd.concat([base] * copies, ignore_index=True)
    rng = np.random.default_rng(7)
    faults = {
        "age": ["999", "old", "-4", "", "nan", "inf", "17"],
        "job": ["astronaut", "", "unknown", "ADMIN."],
        "contact": ["", "pigeon"],
        "y": ["maybe", "", "unknown"],
        "campaign": ["1,5", "0x10", " 3 "],
        "pdays": ["999", "1000"],
        "euribor3m": ["-inf", "NaN"],
    }
    planted = {}
    for column, values in faults.items():
        for value in values:
            at = int(rng.integers(len(frame)))
            frame.loc[at, column] = value
            planted[at] = f"{column}={value!r}"
    return frame, planted


def test_a_10x_sample_with_planted_faults_is_quarantined_alike(tmp_path, bank_batches):
    frame, planted = _planted(bank_batches)
    path = data.write_batch(frame, tmp_path, "b10x", BANK.source.separator)
    expected, got = _both(path, BANK, "b10x", 3_000)
    _assert_same(expected, got)
    quarantined = got[2]
    assert len(quarantined) >= 12  # the planted faults that are faults, each with its reason
    assert quarantined["reason"].str.len().gt(0).all()
    assert set(quarantined[ROW_KEY]) <= {f"b10x:{i:06d}" for i in planted}


def test_rows_with_many_faults_and_a_fault_shared_by_many_rows_are_quarantined_alike(
        tmp_path, bank_batches):
    """Every reason the oracle gives a row, values that did not parse first, then column by
    column (the oracle's order after those is Pandera's pandas backend's, which puts a
    column that also misses a required value elsewhere after the others: the one
    difference), and a failure shared by a third of the rows (a category renamed at the
    source) worded alike for each."""
    frame = pd.concat([bank_batches["2008-11"]] * 5, ignore_index=True)
    frame.loc[::3, "job"] = "astronaut"
    rows = [3, 9, 21]
    frame.loc[rows, "age"] = ["999", "old", "-4"]
    frame.loc[rows, "campaign"] = ["1,5", "2", "x"]
    frame.loc[rows, "contact"] = ["pigeon", "", "pigeon"]
    path = data.write_batch(frame, tmp_path, "many", BANK.source.separator)
    expected, got = _both(path, BANK, "many", 1_000)
    _assert_same(expected[:2] + (expected[2].drop(columns="reason"),),
                 got[:2] + (got[2].drop(columns="reason"),))
    assert [sorted(r.split("; ")) for r in got[2]["reason"]] == \
        [sorted(r.split("; ")) for r in expected[2]["reason"]]
    reasons = got[2].set_index(ROW_KEY)["reason"]
    assert len(reasons) == len(frame[::3])
    assert reasons["many:000003"] == (
        "campaign: not a number '1,5'; job: unseen category 'astronaut'; "
        "contact: unseen category 'pigeon'; age: out of range (17.0, 120.0) (value 999.0)")
    assert (reasons.drop([f"many:{i:06d}" for i in rows])
            == "job: unseen category 'astronaut'").all()


@pytest.mark.parametrize("tokens", [["unknown"], ["unknown", "-1", "nan"]])
def test_missing_tokens_that_read_as_numbers_are_missing_not_numbers(tmp_path, bank_batches,
                                                                   tokens):
    """Numbers are cast as they are when no missing token reads as a number (Bank's); a
    contract whose tokens do ("-1", "nan") still has them missing, as the oracle does, and
    the values that are no number quarantined with the same reasons."""
    contract = BANK.model_copy(update={"missing_tokens": tokens})
    frame = bank_batches["2008-11"].head(60).copy()
    frame.loc[[2, 5, 7, 9, 11], "age"] = ["-1", "nan", "old", "unknown", "NaN"]
    frame.loc[[4, 13], "campaign"] = ["-1", "x"]
    frame.loc[[6, 8], "y"] = ["-1", "maybe"]
    path = data.write_batch(frame, tmp_path, "t", BANK.source.separator)
    expected, got = _both(path, contract, "t", 25)
    _assert_same(expected, got)
    numeric = "-1" in tokens
    reasons = got[2].set_index(ROW_KEY)["reason"].to_dict()
    required = "age: missing required value"
    assert reasons["t:000002"] == (required if numeric else
                                   "age: out of range (17.0, 120.0) (value -1.0)")
    assert reasons["t:000005"] == (required if numeric else "age: not a number 'nan'")
    assert reasons["t:000007"] == "age: not a number 'old'"
    assert reasons["t:000009"] == required  # Bank's own token: missing
    assert reasons["t:000011"] == "age: not a number 'NaN'"
    assert reasons["t:000013"] == "campaign: not a number 'x'"
    assert reasons["t:000008"] == "y: unknown label 'maybe'"
    assert reasons.get("t:000006") == (None if numeric else "y: unknown label '-1'")


def test_an_overflowing_number_is_quarantined_out_of_range(tmp_path, bank_batches):
    """The one difference from the pandas path: "1e999" overflows to infinity (as Python's
    float() reads it), out of range, where pandas read it as no number at all. Refused
    either way."""
    frame = bank_batches["2008-11"].head(50).copy()
    frame.loc[3, "age"] = "1e999"
    path = data.write_batch(frame, tmp_path, "b", BANK.source.separator)
    result = data.validate_rows(data.parse_batch(data.read_batch(path, BANK), BANK, "b"), BANK)
    assert result.quarantined[ROW_KEY].tolist() == ["b:000003"]
    assert result.quarantined["reason"].iat[0] == "age: out of range (17.0, 120.0) (value inf)"


def test_the_raw_check_finds_what_the_pandas_schema_found(tmp_path, bank_batches):
    frame = bank_batches["2009-03"].copy()
    frame.loc[: len(frame) // 2, "campaign"] = "many"  # half of a numeric column: wrong type
    frame = frame.drop(columns=["poutcome"])  # a column missing
    path = data.write_batch(frame, tmp_path, "bad", BANK.source.separator)
    text = next(data.read_batch_frames(path, BANK, 1 << 30))
    got = failure_cases(raw_schema(BANK), text)
    expected = failure_cases(oracle.raw_schema(BANK), text.to_pandas())
    key = ["column", "check", "index"]
    pd.testing.assert_frame_equal(
        got[key].sort_values(key, ignore_index=True),
        expected[key].sort_values(key, ignore_index=True))
    assert "campaign" in set(got["column"]) and "poutcome" in set(got["failure_case"])
    # A sample keeps every (column, check) pair, the first cases of each, and counts all.
    for schema, frame in [(raw_schema(BANK), text.lazy()),
                          (oracle.raw_schema(BANK), text.to_pandas())]:
        sample, count = failure_sample(schema, frame, per_check=3)
        assert count == len(got)
        assert sample.groupby(["column", "check"]).size().max() == 3
        first = got.groupby(["column", "check"], sort=False).head(3)
        pd.testing.assert_frame_equal(sample.sort_values(key, ignore_index=True),
                                      first.sort_values(key, ignore_index=True))


def test_an_empty_file_and_a_header_alone(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    assert next(data.read_batch_frames(empty, BANK, 10)).width == 0
    header = tmp_path / "h.csv"
    header.write_text("age;job\n")
    frame = next(data.read_batch_frames(header, BANK, 10))
    assert frame.columns == ["age", "job"] and frame.height == 0
    assert frame.schema == pl.Schema({"age": pl.String, "job": pl.String})


def test_the_stored_text_is_the_text_read_and_its_profile_counts_missing_values(tmp_path):
    """raw_batch stores a landed file's text with one streamed query (``store_batch_text``)
    and profiles the stored file: the same rows as ``read_batch_frames`` (stripped, missing
    as ""), and the share of missing values (empty or a missing token) per column."""
    path = tmp_path / "b.csv"
    path.write_text("age;job;marital\n 41 ;admin.;unknown\n;unknown;married\n"
                    "30;  blue-collar;\n52;\"a;b\";single\n")
    stored = tmp_path / "b.parquet"
    data.store_batch_text(path, BANK, stored)
    text = pl.read_parquet(stored)
    assert text.equals(pl.concat(list(data.read_batch_frames(path, BANK, 2))))
    assert text["age"].to_list() == ["41", "", "30", "52"]
    assert text["job"].to_list() == ["admin.", "unknown", "blue-collar", "a;b"]
    profile = data.batch_profile(stored, BANK, "b")
    assert profile["rows"] == 4 and profile["columns"] == 3
    assert profile["null_fractions"] == {"age": 0.25, "job": 0.25, "marital": 0.5}
    header = tmp_path / "h.csv"
    header.write_text("age;job\n")
    data.store_batch_text(header, BANK, tmp_path / "h.parquet")
    assert data.batch_profile(tmp_path / "h.parquet", BANK, "h")["null_fractions"] == {}
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    data.store_batch_text(empty, BANK, tmp_path / "e.parquet")
    assert data.batch_profile(tmp_path / "e.parquet", BANK, "e")["columns"] == 0
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"age;job\n1;\xff\n")
    with pytest.raises(data.BatchError, match="bad.csv cannot be parsed as CSV"):
        data.store_batch_text(bad, BANK, tmp_path / "bad.parquet")


def test_stored_batches_are_read_in_order_a_part_at_a_time_and_a_damaged_one_is_named(
        tmp_path):
    """validate_batch reads a stored batch through ``io.read_parquet_frames`` (a slice of
    the file at a time): every row once, in the file's order, at most ``rows`` at a
    time; a file without rows gives one empty frame with its columns; a damaged file is a
    ValueError naming it."""
    from mlops_assets.lib import io

    frame = pl.DataFrame({"a": [str(i) for i in range(2_500)], "b": ["x"] * 2_500})
    frame.write_parquet(tmp_path / "batch.parquet", row_group_size=700)
    parts = list(io.read_parquet_frames(tmp_path / "batch.parquet", 1_000))
    assert max(p.height for p in parts) <= 1_000 and len(parts) >= 3
    assert pl.concat(parts).equals(frame)
    frame.clear().write_parquet(tmp_path / "none.parquet")
    (empty,) = io.read_parquet_frames(tmp_path / "none.parquet", 1_000)
    assert empty.height == 0 and empty.schema == frame.schema
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes((tmp_path / "batch.parquet").read_bytes()[:-300])
    with pytest.raises(ValueError, match=f"{damaged} is not a readable Parquet file"):
        list(io.read_parquet_frames(damaged, 1_000))


def test_polars_rows_are_written_as_the_same_file_readers_knew(tmp_path, bank_batches):
    """``io.ParquetWriter`` hands Polars' text to the Parquet writer as string views (no
    copy of every value) and gives the file the Arrow schema it had when the rows were
    copied to Arrow's strings first: the same schema (pandas' metadata too, so a label with
    gaps is still pandas' Int8), the same rows, for pyarrow, pandas and Polars."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_assets.lib import io

    raw = pd.concat([bank_batches["2008-05"].head(300)] * 2, ignore_index=True).astype(str)
    raw.loc[[3, 200], "y"] = ""  # unlabeled rows: the label has gaps
    raw.loc[7, "age"] = "forty"  # a quarantined row, with its reason
    parsed = data.parse_batch(raw, BANK, "2008-05")
    valid, bad = data.check_frame(parsed.frame, parsed.errors, BANK)
    assert bad.height == 1 and valid.height == 599
    for frame, schema in ((valid, data.row_schema(BANK)), (bad, data.row_schema(BANK, True)),
                          (valid.select(ROW_KEY, "job", "age"), None)):
        with io.ParquetWriter(tmp_path / "new.parquet", schema, plain=[ROW_KEY]) as w:
            for part in frame.iter_slices(250):  # appended, as validate_batch does
                w.write(part)
        copied = frame.to_arrow()
        copied = copied.cast(schema or pa.schema(
            [f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f
             for f in copied.schema]))
        pq.write_table(copied, tmp_path / "old.parquet")
        new, old = pq.read_table(tmp_path / "new.parquet"), pq.read_table(tmp_path / "old.parquet")
        assert new.schema.equals(old.schema, check_metadata=True), (new.schema, old.schema)
        assert new.equals(old) and new.num_rows == frame.height
        assert pl.read_parquet(tmp_path / "new.parquet").equals(frame)
        read = pd.read_parquet(tmp_path / "new.parquet")
        pd.testing.assert_frame_equal(read, pd.read_parquet(tmp_path / "old.parquet"))
        assert str(pq.read_schema(tmp_path / "new.parquet").field("job").type) == "string"
        if schema is not None:
            assert str(read["_target"].dtype) == "Int8"
            assert read["_target"].isna().sum() == (2 if frame is valid else 0)


def test_a_clean_file_is_read_without_stripping_and_any_edge_space_is_still_stripped(
        tmp_path, monkeypatch):
    """Stripping every value is skipped for a file whose values cannot begin or end with
    whitespace (``may_hold_edge_space``), so it must never miss one: on 400 random small
    files (spaces, tabs, CR LF, no-break and em spaces, quotes, in any place) the text read
    is the text read with every value stripped, whatever the block the file is looked at
    by, and a space inside a value alone does not count."""
    rng = np.random.default_rng(27)
    alphabet = ["a", "b", "1", ".", "-", " ", "\t", "\u00a0", "\u2003", "\r", "é"]
    forced = []
    for n in range(400):
        lines = ["age;job;marital"]
        for _ in range(int(rng.integers(1, 6))):
            values = []
            for _ in range(3):
                chars = rng.choice(alphabet, size=int(rng.integers(0, 5)),
                                   p=[.3, .2, .2, .05, .05, .06, .03, .03, .03, .02, .03])
                value = "".join(chars)
                values.append(f'"{value}"' if rng.random() < 0.1 else value)
            lines.append(";".join(values))
        path = tmp_path / f"{n}.csv"
        path.write_bytes(("\n".join(lines) + "\n").encode())
        try:
            got = pl.concat(list(data.read_batch_frames(path, BANK, 1 << 30)))
        except data.BatchError:
            continue  # a file Polars refuses is refused either way
        answers = {data.may_hold_edge_space(path, ";", size) for size in (1, 2, 3, 7, 1 << 22)}
        assert len(answers) == 1, path.read_bytes()
        with monkeypatch.context() as m:
            m.setattr(data, "may_hold_edge_space", lambda *a: True)
            stripped = pl.concat(list(data.read_batch_frames(path, BANK, 1 << 30)))
        assert got.equals(stripped), path.read_bytes()
        forced.append(answers.pop())
    assert sum(forced) > 50 and len(forced) - sum(forced) > 10  # both ways, often
    inner = tmp_path / "inner.csv"
    inner.write_text("age;job\n41;blue collar\n")
    assert not data.may_hold_edge_space(inner, ";")
    for edge in ("41 ;x", "41; x", " 41;x", "41;x ", "41;\tx", "41;x\r", '41;"x"', "41;\u00a0x"):
        path = tmp_path / "edge.csv"
        path.write_text(f"age;job\n{edge}\n")
        assert data.may_hold_edge_space(path, ";"), edge
