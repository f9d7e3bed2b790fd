"""The sealed split out of core (lib/split.split_batches): the same split as holding every
row in memory, and memory bounded by its chunk and DuckDB's limit, not by the rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.config import BATCH, KEY, ROW_KEY, SPLIT, SPLITS, TARGET, load_contract
from mlops_assets.lib import data, io, split

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


def _in_memory(frames: list[pd.DataFrame], labels, contract, order, sealed: pd.Series):
    """The oracle: every row in one frame. A row repeating a row of another batch (same
    features and label) is set aside unless it is the twin kept: sealed first, then the
    earliest batch, then the smallest row key."""
    rows, _ = split.apply_labels(pd.concat(frames, ignore_index=True), labels, contract)
    keys = split.content_keys(rows, contract)
    order_of = pd.DataFrame({"key": keys, "unsealed": ~rows[ROW_KEY].isin(sealed),
                             "rank": rows[BATCH].map({b: i for i, b in enumerate(order)}),
                             "row": rows[ROW_KEY]}).sort_values(
        ["key", "unsealed", "rank", "row"])
    first = order_of.groupby("key", sort=False).head(1)
    keeper = pd.Series(first["row"].to_numpy(), index=first["key"].to_numpy())
    keeper_batch = pd.Series(rows.loc[first.index, BATCH].to_numpy(), index=first["key"])
    is_dup = (keys.map(keeper) != rows[ROW_KEY]) & (rows[BATCH] != keys.map(keeper_batch))
    dups = rows[is_dup].copy()
    dups["reason"] = "duplicate of row " + keys[is_dup].map(keeper) + " (batch " \
        + keys[is_dup].map(keeper_batch) + ")"
    kept = split.with_split(rows[~is_dup].reset_index(drop=True), contract)
    return ({s: kept[kept[SPLIT] == s].reset_index(drop=True) for s in SPLITS},
            dups.reset_index(drop=True))


def test_the_out_of_core_split_is_the_in_memory_split(tmp_path, bank_batches):
    """Over chunks smaller than a batch and a DuckDB limit of 32 MB: the same rows in each
    split in the same order and types, the same duplicates with the same reasons, and the
    manifest extended by exactly the new test rows (an earlier sealing kept first)."""
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
    sealed_before = split.with_split(frames["copy"], keyed)  # the copy's rows were sealed
    sealed_before = sealed_before.loc[sealed_before[SPLIT] == "test", [ROW_KEY, BATCH]]
    io.write_parquet(manifest, sealed_before.reset_index(drop=True))

    expected, expected_dups = _in_memory([frames[b] for b in order], labels, keyed, order,
                                         sealed_before[ROW_KEY])
    got = split.split_batches(files, labels, keyed, manifest, home / "out",
                              memory_limit="32MB", chunk_rows=1000)

    for s in SPLITS:
        pd.testing.assert_frame_equal(pd.read_parquet(got.paths[s]), expected[s])
        assert got.rows[s] == len(expected[s])
        assert got.positives[s] == int(expected[s][TARGET].sum())
    pd.testing.assert_frame_equal(got.duplicates, expected_dups)
    # Both directions: sealed copies win over their originals, the rest go to the earlier batch.
    assert expected_dups[BATCH].nunique() == 3 and len(expected_dups) > 1000
    all_rows = pd.concat([frames[b] for b in order])
    assert 0 < got.unlabeled == split.apply_labels(all_rows, labels, keyed)[1] \
        < int(all_rows[TARGET].isna().sum())  # some arrived, some still wait
    new_test = expected["test"].loc[~expected["test"][ROW_KEY].isin(sealed_before[ROW_KEY]),
                                    [ROW_KEY, BATCH]]
    pd.testing.assert_frame_equal(
        pd.read_parquet(manifest),
        pd.concat([sealed_before, new_test], ignore_index=True))
    assert (got.manifest.added, got.manifest.total) == (len(new_test),
                                                        len(sealed_before) + len(new_test))


# Peak RSS over the split only: the kernel's high-water mark (VmHWM) is reset after the
# imports (`5` to /proc/self/clear_refs), then read against the resident size at that point.
_MEASURE = """
import json, sys
from pathlib import Path
from mlops_assets.config import load_contract
from mlops_assets.lib import split
import duckdb, pyarrow.parquet  # imported before the baseline: they are not the data

def status(field):
    line = next(x for x in open("/proc/self/status") if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024

files = [(Path(p).stem, Path(p)) for p in sys.argv[1:-1]]
out = Path(sys.argv[-1])
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
result = split.split_batches(files, None, load_contract("bank"), out / "sealed.parquet",
                             out / "work", memory_limit="32MB", chunk_rows=10_000)
print(json.dumps({"added_mb": status("VmHWM") - before, "rows": result.rows}))
"""


def _measure(paths: list[Path], out: Path) -> dict:
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_MEASURE), *map(str, paths),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_split_holds_a_chunk_not_the_dataset(tmp_path, bank_batches):
    """The split's peak memory (in its own process) with 10,000-row chunks and a 32 MB
    DuckDB limit, over 4 and then 16 copies of 28k valid Bank rows (112k and 448k rows):
    it stays under half of what the larger dataset takes loaded at once, and from 4 to 16
    copies grows by under a tenth of what the data grows by (bounded by the chunk and the
    engine's limit, not by the rows)."""
    files, frames = _valid_batch_files(bank_batches, list(bank_batches)[:8], tmp_path)
    base = pd.concat(frames.values(), ignore_index=True)
    paths, at_once = [], []
    for copy in range(16):  # distinct rows (no cross-batch duplicates), a batch each
        frame = _landed_again(base, f"b{copy:02d}")
        frame["age"] = frame["age"] + copy * 1000  # no row of one copy equals one of another
        at_once.append(frame.memory_usage(deep=True).sum() / 2**20)
        paths.append(io.write_parquet(tmp_path / f"b{copy:02d}.parquet", frame))
    small = _measure(paths[:4], tmp_path / "small")
    large = _measure(paths, tmp_path / "large")
    assert sum(large["rows"].values()) == 16 * len(base)
    data_growth = sum(at_once) - sum(at_once[:4])
    assert sum(at_once) > 350  # MB: the scale at which the bound means something
    assert 0 < large["added_mb"] < sum(at_once) / 2, (large, sum(at_once))
    assert large["added_mb"] - small["added_mb"] < data_growth / 10, (small, large, data_growth)


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
