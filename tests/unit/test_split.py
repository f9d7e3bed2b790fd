"""The sealed split out of core (lib/split.split_batches): the same split as holding every
row in memory, and memory bounded by its chunk and DuckDB's limit, not by the rows."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_assets.config import (
    BATCH,
    CONTENT,
    KEY,
    ROW_KEY,
    SPLIT,
    SPLITS,
    TARGET,
    VERSION,
    load_contract,
)
from mlops_assets.lib import io
from mlops_assets.lib.dataset import data, split

BANK = load_contract("bank")


def _valid_batch_files(bank_batches, keys, folder: Path, contract=BANK):
    files, frames = [], {}
    for key in keys:
        valid = data.validate_rows(data.parse_batch(bank_batches[key], contract, key),
                                   contract).valid
        frames[key] = valid
        files.append((key, io.write_parquet(folder / f"{key}.parquet", valid)))
    return files, frames


def _landed_again(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame``'s rows as another batch (new row keys, same content)."""
    return frame.assign(**{ROW_KEY: [f"{name}:{i:06d}" for i in range(len(frame))],
                           BATCH: name})


def _in_memory(frames: list[pd.DataFrame], labels, contract, order, sealed: set):
    """The oracle: every row in one frame. A row repeating a row of another batch (same
    features and label) is set aside unless it is the twin kept: the earliest batch, then
    the earliest row. A sealed content is test; any other goes where its hash sends it."""
    rows, _ = split.apply_labels(pd.concat(frames, ignore_index=True), labels, contract)
    keys = split.content_keys(rows, contract)
    order_of = pd.DataFrame({"key": keys, "rank": rows[BATCH].map({b: i for i, b in
                                                                    enumerate(order)}),
                             "position": np.arange(len(rows))}).sort_values(
        ["key", "rank", "position"])
    first = order_of.groupby("key", sort=False).head(1)
    keeper = pd.Series(rows.loc[first.index, ROW_KEY].to_numpy(), index=first["key"].to_numpy())
    keeper_batch = pd.Series(rows.loc[first.index, BATCH].to_numpy(), index=first["key"])
    is_dup = (keys.map(keeper) != rows[ROW_KEY]) & (rows[BATCH] != keys.map(keeper_batch))
    dups = rows[is_dup].copy()
    dups[CONTENT] = keys[is_dup].to_numpy(np.uint64)
    dups["reason"] = "duplicate of row " + keys[is_dup].map(keeper) + " (batch " \
        + keys[is_dup].map(keeper_batch) + ")"
    kept = rows[~is_dup].reset_index(drop=True)
    kept[CONTENT] = split.content_keys(kept, contract).to_numpy(np.uint64)
    where = np.where(kept[CONTENT].isin(sealed), "test",
                     split.assign_split(kept[CONTENT], contract.split_fractions))
    return ({s: kept[where == s].reset_index(drop=True) for s in SPLITS},
            dups.reset_index(drop=True))


def _manifest(rows: pd.DataFrame, contract) -> pd.DataFrame:
    return pd.DataFrame({CONTENT: split.content_keys(rows, contract).to_numpy(np.uint64),
                         ROW_KEY: rows[ROW_KEY].to_numpy(), BATCH: rows[BATCH].to_numpy(),
                         VERSION: None})


def test_the_out_of_core_split_is_the_in_memory_split(tmp_path, bank_batches):
    """Over chunks smaller than a batch and a DuckDB limit of 32 MB: the same rows in each
    split in the same order and types, the same duplicates with the same reasons, and the
    manifest extended by exactly the new test contents (an earlier sealing kept first, and
    kept in test even where the hash would say otherwise)."""
    keyed = BANK.model_copy(update={"key_column": "duration", "drop_columns": []})
    raw = {k: bank_batches[k].copy() for k in ("2008-05", "2008-06", "2008-11", "2009-05")}
    for frame in raw.values():  # some labels wait, some of them arrive in a label file
        frame.loc[frame.index[::6], "y"] = ""
    files, frames = _valid_batch_files(raw, list(raw), tmp_path, keyed)
    waiting = frames["2008-06"][frames["2008-06"][TARGET].isna()]
    labels = pd.DataFrame({"request_id": waiting[KEY].iloc[::2], TARGET: 1})
    for name, frame in (("copy", frames["2008-05"]), ("half", frames["2008-11"].iloc[::2])):
        frames[name] = _landed_again(frame, name)
        files.append((name, io.write_parquet(tmp_path / f"{name}.parquet", frames[name])))
    order = [b for b, _ in files]
    home = tmp_path / "o'clock"  # a quote in the path: DuckDB reads it as an SQL literal
    manifest = home / "sealed.parquet"
    # Sealed earlier: the copy's test rows, and 50 rows of 2008-08 (not in this data) and
    # 40 labelled rows of 2008-06 that the hash would send to train.
    copy = split.with_split(frames["copy"], keyed)
    june = split.with_split(frames["2008-06"].dropna(subset=[TARGET]), keyed)
    gone = _valid_batch_files(bank_batches, ["2008-08"], tmp_path / "gone")[1]["2008-08"]
    sealed_before = pd.concat([
        _manifest(copy[copy[SPLIT] == "test"], keyed),
        _manifest(gone.head(50), keyed),
        _manifest(june[june[SPLIT] == "train"].head(40), keyed)], ignore_index=True)
    io.write_parquet(manifest, sealed_before)

    expected, expected_dups = _in_memory([frames[b] for b in order], labels, keyed, order,
                                         set(sealed_before[CONTENT]))
    got = split.split_batches(files, labels, keyed, manifest, home / "out",
                              memory_limit="32MB", chunk_rows=1000)

    for s in SPLITS:
        pd.testing.assert_frame_equal(pd.read_parquet(got.paths[s]), expected[s])
        assert got.rows[s] == len(expected[s])
        assert got.positives[s] == int(expected[s][TARGET].sum())
    pd.testing.assert_frame_equal(got.duplicates, expected_dups)
    assert {"copy", "half"} <= set(expected_dups[BATCH]) and len(expected_dups) > 1000
    assert set(sealed_before[CONTENT].tail(40)) <= set(expected["test"][CONTENT])
    all_rows = pd.concat([frames[b] for b in order])
    assert 0 < got.unlabeled == split.apply_labels(all_rows, labels, keyed)[1] \
        < int(all_rows[TARGET].isna().sum())  # some arrived, some still wait
    test = expected["test"]
    new_test = test[~test[CONTENT].isin(sealed_before[CONTENT])].drop_duplicates(CONTENT)
    pd.testing.assert_frame_equal(
        pd.read_parquet(manifest),
        pd.concat([sealed_before, _manifest(new_test, keyed)], ignore_index=True))
    assert (got.manifest.added, got.manifest.total) == (len(new_test),
                                                        len(sealed_before) + len(new_test))


def test_a_manifest_of_row_keys_is_rewritten_by_content(tmp_path, bank_batches):
    """A manifest written before sealing by content (row keys only) keeps its rows sealed:
    each row key found in the data takes that row's content, and stays test."""
    files, frames = _valid_batch_files(bank_batches, ["2008-05"], tmp_path)
    rows = split.with_split(frames["2008-05"], BANK)
    old = rows[rows[SPLIT] == "train"].head(30)
    manifest = io.write_parquet(tmp_path / "sealed.parquet",
                                pd.DataFrame({ROW_KEY: [*old[ROW_KEY], "2007-01:000001"],
                                              BATCH: [*old[BATCH], "2007-01"]}))
    got = split.split_batches(files, None, BANK, manifest, tmp_path / "out")
    test = pd.read_parquet(got.paths["test"])
    assert set(old[ROW_KEY]) <= set(test[ROW_KEY])
    rewritten = pd.read_parquet(manifest)
    assert list(rewritten.columns) == [CONTENT, ROW_KEY, BATCH, VERSION]
    assert list(rewritten[ROW_KEY].head(31)) == [*old[ROW_KEY], "2007-01:000001"]
    assert rewritten[CONTENT].head(30).notna().all() and pd.isna(rewritten[CONTENT].iloc[30])
    assert split.audit(manifest, **got.paths).ok


def test_the_split_holds_a_chunk_not_the_dataset(tmp_path, bank_batches, monkeypatch):
    """What the split holds at once, counted (its peak memory is measured by `make bench`,
    not here: other work shares the machine): every read of a batch is a chunk of at most
    ``chunk_rows`` rows, no file is read whole, and the cross-batch step runs in DuckDB
    under the memory limit it is given."""
    import duckdb

    files, frames = _valid_batch_files(bank_batches, list(bank_batches)[:4], tmp_path)
    base = pd.concat(frames.values(), ignore_index=True)
    paths = []
    for copy in range(4):  # distinct rows, a batch each
        frame = _landed_again(base, f"b{copy:02d}")
        frame["age"] = frame["age"] + copy * 1000
        paths.append((f"b{copy:02d}", io.write_parquet(tmp_path / f"b{copy:02d}.parquet",
                                                       frame)))
    chunks, whole, limits = [], [], []
    read_tables, connect = io.read_parquet_tables, duckdb.connect

    def counting(path, rows, columns=None, dictionary=()):  # every Parquet read of io's
        for chunk in read_tables(path, rows, columns, dictionary):
            chunks.append(chunk.num_rows)
            yield chunk

    def connecting(*args, config=None, **kwargs):
        limits.append((config or {}).get("memory_limit"))
        return connect(*args, config=config, **kwargs)

    monkeypatch.setattr(io, "read_parquet_tables", counting)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: whole.append(a) or pa.table({}))
    monkeypatch.setattr(io, "read_parquet", lambda *a, **k: whole.append(a) or pd.DataFrame())
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: whole.append(a) or pd.DataFrame())
    monkeypatch.setattr(duckdb, "connect", connecting)
    result = split.split_batches(paths, None, BANK, tmp_path / "sealed.parquet",
                                 tmp_path / "work", memory_limit="32MB", chunk_rows=2_000)
    assert sum(result.rows.values()) == 4 * len(base) > 4 * 2_000
    assert chunks and max(chunks) <= 2_000
    assert sum(chunks) == 2 * 4 * len(base)  # two passes, every row read twice, in chunks
    assert whole == []
    assert limits == ["32MB"]


def test_a_damaged_batch_file_is_named_and_nothing_is_sealed(tmp_path, bank_batches):
    files, _ = _valid_batch_files(bank_batches, list(bank_batches)[:2], tmp_path)
    manifest = io.write_parquet(tmp_path / "sealed.parquet",
                                pd.DataFrame({ROW_KEY: ["x:000001"], BATCH: ["x"]}))
    before = manifest.read_bytes()
    damaged = files[1][1]
    damaged.write_bytes(damaged.read_bytes()[:3000])  # cut short, as by a full disk
    with pytest.raises(ValueError, match=f"{re.escape(str(damaged))} is not a readable "
                                         "Parquet file"):
        split.split_batches(files, None, BANK, manifest, tmp_path / "out")
    assert manifest.read_bytes() == before


def test_the_second_pass_takes_the_first_pass_hashes_in_order_and_notices_a_change(tmp_path):
    """The split hashes each row once: its second pass takes the first pass's hashes, a few
    at a time across the stored file's batches, and stops, saying so, if the rows it reads
    are more or fewer than those hashed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"content": pa.array(np.arange(10, dtype=np.uint64))}), path,
                   row_group_size=4)
    contents = split._Column(path, "content", 3)
    got = [contents.take(n) for n in (0, 5, 1, 4)]
    assert [list(g) for g in got] == [[], [0, 1, 2, 3, 4], [5], [6, 7, 8, 9]]
    contents.finish()
    with pytest.raises(RuntimeError, match="fewer rows than its second reads"):
        contents.take(1)
    contents.close()
    fewer = split._Column(path, "content", 3)
    fewer.take(7)
    with pytest.raises(RuntimeError, match="3 content hashes of the first pass were not used"):
        fewer.finish()
    fewer.close()


def test_content_hashes_are_the_same_read_as_categories(tmp_path, bank_batches):
    """The split reads category columns dictionary-encoded (a hash per category, not per
    row); the sealed manifest holds pandas' hashes of the values read as text: they must be
    the same, with missing values, text that only differs in case or space, and non-ASCII."""
    _, frames = _valid_batch_files(bank_batches, ["2008-05"], tmp_path)
    rows = frames["2008-05"].head(3000).copy()
    job = rows.columns.get_loc("job")
    rows.iloc[::7, job] = None
    rows.iloc[1::11, job] = "Admin."
    rows.iloc[2::13, job] = "admin. "
    rows.iloc[3::17, job] = "técnico"
    rows.loc[rows.index[::5], "age"] = np.nan
    path = io.write_parquet(tmp_path / "odd.parquet", rows)
    read = list(io.read_parquet_tables(path, 1000, dictionary=BANK.categorical))
    assert len(read) == 3 and pa.types.is_dictionary(read[0].schema.field("job").type)
    hashed = np.concatenate([split._content_of(t, BANK) for t in read])
    np.testing.assert_array_equal(hashed, split.content_keys(pd.read_parquet(path), BANK)
                                  .to_numpy(np.uint64))
    assert len(np.unique(hashed)) > 2900  # the odd values give their own hashes
