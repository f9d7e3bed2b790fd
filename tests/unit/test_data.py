"""Batch logic without Dagster: cutting, parsing, validation reasons, split, ingestion plan."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import BATCH, CONTENT, ROW_KEY, SPLIT, TARGET, load_contract
from mlops_assets.lib import io
from mlops_assets.lib.dataset import data, split

BANK = load_contract("bank")


def test_bank_source_cuts_into_26_monthly_periods(bank_batches):
    assert len(bank_batches) == 26
    keys = list(bank_batches)
    assert keys[0] == "2008-05" and keys[-1] == "2010-11"
    assert sum(len(bank_batches[k]) for k in keys[:12]) == 37_117
    assert keys[11] == "2009-07"
    assert sum(len(df) for df in bank_batches.values()) == 41_188


def test_adult_source_cuts_into_row_chunks():
    adult = load_contract("adult")
    batches = data.source_batches(adult)
    assert sum(len(df) for df in batches.values()) == 48_842
    assert all(len(df) == 4000 for df in list(batches.values())[:-1])
    labels = pd.concat(batches.values())["income"].unique()
    assert set(labels) == {">50K", "<=50K", ">50K.", "<=50K."}


def test_parse_and_validate_give_a_reason_per_bad_row(bank_batches):
    raw = bank_batches["2008-05"].head(200).copy()
    raw.loc[0, "age"] = "250"
    raw.loc[1, "job"] = "astronaut"
    raw.loc[2, "campaign"] = "many"
    raw.loc[3, "y"] = "maybe"
    raw.loc[4, "contact"] = "unknown"  # missing token in a column that may not be missing
    result = data.validate_rows(data.parse_batch(raw, BANK, "2008-05"), BANK)
    assert len(result.valid) == 195
    reasons = dict(zip(result.quarantined[ROW_KEY], result.quarantined["reason"], strict=True))
    assert reasons == {
        "2008-05:000000": "age: out of range (17.0, 120.0) (value 250.0)",
        "2008-05:000001": "job: unseen category 'astronaut'",
        "2008-05:000002": "campaign: not a number 'many'",
        "2008-05:000003": "y: unknown label 'maybe'",
        "2008-05:000004": "contact: missing required value",
    }
    assert result.invalid_fraction == pytest.approx(5 / 200)
    assert "duration" not in result.valid.columns
    assert set(result.valid[TARGET].unique()) <= {0, 1}


def test_pii_columns_are_hashed_never_stored_raw(bank_batches):
    contract = BANK.model_copy(update={"pii_columns": {"duration": "hash"}, "drop_columns": []})
    raw = bank_batches["2008-05"].head(5)
    parsed = data.parse_batch(raw, contract, "2008-05")
    assert not parsed.rows["duration"].isin(raw["duration"]).any()
    assert parsed.rows["duration"].str.len().eq(16).all()


def test_split_is_a_pure_function_of_the_content():
    contents = pd.Series(np.arange(20_000, dtype=np.uint64) * np.uint64(2654435761))
    first = split.assign_split(contents, (0.7, 0.15, 0.15))
    # The same contents inside a larger, shuffled dataset keep their assignment.
    more = pd.concat([contents, pd.Series(np.arange(5000, dtype=np.uint64) + np.uint64(7))]
                     ).sample(frac=1, random_state=0)
    again = split.assign_split(more.reset_index(drop=True), (0.7, 0.15, 0.15))
    again_map = dict(zip(more, again, strict=True))
    assert all(again_map[k] == s for k, s in zip(contents, first, strict=True))
    shares = first.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.015)
    assert shares["test"] == pytest.approx(0.15, abs=0.015)


def test_a_row_and_its_copy_under_any_name_share_a_split(bank_batches):
    valid = data.validate_rows(data.parse_batch(bank_batches["2008-05"], BANK, "2008-05"),
                               BANK).valid
    copy = data.validate_rows(data.parse_batch(bank_batches["2008-05"], BANK, "other-name"),
                              BANK).valid
    assert (split.with_split(valid, BANK)[SPLIT] == split.with_split(copy, BANK)[SPLIT]).all()


def test_split_audit_catches_overlap_and_moved_and_missing_sealed_rows(tmp_path):
    # Rows are (row key, batch); a row's content is its key's letter (a copy: same letter).
    def frame(rows):
        return pd.DataFrame({ROW_KEY: [k for k, _ in rows], BATCH: [b for _, b in rows],
                             CONTENT: np.array([ord(k[0]) for k, _ in rows], np.uint64)})

    manifest = io.write_parquet(tmp_path / "sealed.parquet", frame(
        [("b", "x"), ("c", "x"), ("e", "y"), ("z", "gone")]))

    def files(**splits):
        return {name: io.write_parquet(tmp_path / f"{name}.parquet", frame(rows))
                for name, rows in splits.items()}

    ok = split.audit(manifest, **files(train=[("a", "x")], validation=[("d", "x")],
                                       test=[("b", "x"), ("c", "x"), ("e", "y")]))
    assert ok.ok and ok.sealed_total == 3  # "z" is of a batch no longer in the data
    assert split.leaked_test_rows(manifest, tmp_path / "train.parquet") == (1, 0, [])
    bad = split.audit(manifest, **files(train=[("a", "x"), ("b", "x")],
                                        validation=[("d", "x"), ("a2", "x")],
                                        test=[("c", "x"), ("a3", "x")]))
    assert not bad.ok
    assert bad.overlaps == {"train & validation": 1, "train & test": 1,
                            "validation & test": 1}
    assert bad.sealed_moved == 1 and bad.sealed_examples == ["b"]
    assert "1 sealed test rows are outside test" in bad.summary
    assert bad.sealed_missing == 0  # "e": its batch y is in no split, so not judged
    shrunk = split.audit(manifest, **files(train=[("a", "y")], validation=[("d", "x")],
                                           test=[("b", "x"), ("c", "x")]))
    assert shrunk.sealed_missing == 1 and shrunk.batches_shrunk == ["y"]
    # A sealed row's content under another key and batch (a copy) is still the sealed row.
    copied = split.audit(manifest, **files(train=[("a", "x")], validation=[("d", "x")],
                                           test=[("b", "x"), ("c", "x"), ("e-copy", "w")]))
    assert copied.ok
    moved = split.audit(manifest, **files(train=[("e-copy", "w")], validation=[("d", "x")],
                                          test=[("b", "x"), ("c", "x")]))
    assert moved.sealed_moved == 1 and moved.sealed_examples == ["e-copy"]
    assert split.leaked_test_rows(manifest, tmp_path / "train.parquet") == (1, 1, ["e-copy"])
    assert split.leaked_test_rows(manifest, tmp_path / "test.parquet") == (2, 2, ["b", "c"])
    assert split.audit(tmp_path / "no-manifest-yet.parquet", **files(
        train=[("a", "x")], validation=[("d", "x")], test=[("b", "x")])).ok


def test_plan_ingestion_ingests_each_content_of_a_batch_once():
    plan = data.plan_ingestion({"a": "h1", "b": "h2", "c": "h1"}, {"b": "h2"})
    # "c" holds the content of "a" under another name: its own batch, whose rows the split
    # sets aside as duplicates.
    assert plan.to_ingest == {"a": "h1", "c": "h1"}
    assert plan.skipped == {"b": "already ingested with this content"}
    changed = data.plan_ingestion({"b": "h3"}, {"b": "h2"})
    assert changed.to_ingest == {"b": "h3"}


def test_the_batches_of_a_tick_are_shared_among_its_runs_by_bytes_not_by_count():
    """Bank's 26 months (rows stand for bytes): shared by count, the first run got 13
    months holding 92% of the rows, so two runs on two cores took about as long as one
    (a 1000x backfill)."""
    rows = {key: len(df) for key, df in data.source_batches(BANK).items()}
    runs = data.share_by_size(rows, 2)
    assert sorted(b for run in runs for b in run) == sorted(rows)  # each batch once
    assert all(run == sorted(run) for run in runs)  # in batch order within a run
    loads = sorted(sum(rows[b] for b in run) for run in runs)
    assert loads[1] - loads[0] <= max(rows.values())  # as even as one batch allows
    assert loads[1] / sum(rows.values()) < 0.55
    by_count = sum(rows[b] for b in sorted(rows)[:13]) / sum(rows.values())
    assert by_count > 0.85  # what sharing by count did
    assert data.share_by_size(rows, 2) == runs  # the same files, the same runs
    assert data.share_by_size({"b": 5, "a": 5}, 4) == [["a"], ["b"]]  # no empty run
    assert data.share_by_size({}, 2) == []
    assert data.share_by_size({"a": 0, "b": 0, "c": 0}, 2) == [["a", "c"], ["b"]]


def test_a_batch_s_run_costs_something_whatever_its_size(tmp_path):
    """The demo's 12 small months: shared by bytes alone, one run got 8 batches and the
    other 4, though each batch's run costs ~0.45 s whatever its size (the demo's ingestion
    took 6.28 s, against 5.78 s shared 6 and 6: means of three demos each). With the landing
    sensor's cost per batch, 6 and 6; the 1000x backfill (the same files 1000 times larger)
    is shared as by bytes alone."""
    from mlops_assets.defs.ingestion.sensors import BATCH_RUN_BYTES

    months = dict(list(data.source_batches(BANK).items())[:12])
    sizes = {key: data.write_batch(df, tmp_path, key, BANK.source.separator).stat().st_size
             for key, df in months.items()}
    assert sorted(map(len, data.share_by_size(sizes, 2))) == [4, 8]  # by bytes alone
    assert sorted(map(len, data.share_by_size(sizes, 2, BATCH_RUN_BYTES))) == [6, 6]
    large = {key: size * 1000 for key, size in sizes.items()}
    assert data.share_by_size(large, 2, BATCH_RUN_BYTES) == data.share_by_size(large, 2)


def test_entries_that_are_not_files_are_skipped_with_the_reason(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    (tmp_path / "good.csv").write_text("a;b\n1;2\n")
    found = data.landed_files(tmp_path)
    assert set(found) == {"folder", "dangling", "good"}
    assert data.incomplete_reason(found["good"]) is None
    assert "is a folder" in data.incomplete_reason(found["folder"])
    assert "is a broken link" in data.incomplete_reason(found["dangling"])


def test_contract_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BANK.model_dump_json().replace('"min":17.0', '"min":500.0'))
    with pytest.raises(ValueError, match="numeric bounds out of order: min 500.0 > max 120.0"):
        load_contract(str(bad))
    with pytest.raises(FileNotFoundError, match="bundled: \\['adult', 'bank'\\]"):
        load_contract("nope")
    # Not YAML: read by libyaml, told by Python's parser, which names the character.
    bad.write_text("name: x\nsource:\n\tfiles: [a\n")
    with pytest.raises(ValueError, match=f"(?s){bad} is not valid YAML: .*found character "
                                         "'\\\\t' that cannot start any token.*line 3"):
        load_contract(str(bad))


NONSENSE = [  # (what is changed in the Bank contract, a phrase of the message it must get)
    (lambda c: c["numeric"]["age"].update(min=float("nan")), "numeric.age.min"),
    (lambda c: c["numeric"]["campaign"].update(max=float("inf")), "numeric.campaign.max"),
    (lambda c: c["numeric"]["pdays"].update(sentinel=float("nan")), "numeric.pdays.sentinel"),
    (lambda c: c.update(split_fractions=[1.2, -0.1, -0.1]), "must each lie in [0, 1]"),
    (lambda c: c.update(split_fractions=[0.5, 0.2, 0.2]), "must sum to 1"),
    (lambda c: c.update(slices=["age_band", "jobs"]), "slices ['jobs'] are not categorical"),
    (lambda c: c.update(name="My Bank/2"), "name: String should match pattern"),
    (lambda c: c["training"].update(threshold_rule="fixed:1.2.3"), "training.threshold_rule"),
    (lambda c: c["training"].update(threshold_rule="fixed:1.5"), "must be in (0, 1)"),
    (lambda c: c["target"].update(negative=["yes"]), "['yes'] are both positive and negative"),
    (lambda c: c["numeric"].update(_row_key=c["numeric"].pop("previous")), "['_row_key'"),
    (lambda c: c["target"].update(column="_target"), "'_target'] collide"),
    (lambda c: c["categorical"]["job"]["categories"].append("admin."),
     "categories repeat ['admin.']"),
    (lambda c: c["age_bands"].update(edges=[0, 40, 30]), "age band edges must increase"),
]


def test_every_nonsense_value_of_a_contract_is_refused_up_front_in_one_message(tmp_path):
    import copy

    import yaml

    from mlops_assets.config import CONTRACTS_DIR, ContractError

    raw = yaml.safe_load((CONTRACTS_DIR / "bank.yaml").read_text())
    raw["source"]["files"] = [str(p) for p in BANK.source_paths()]
    for change, expected in NONSENSE:
        one = copy.deepcopy(raw)
        change(one)
        path = tmp_path / "one.yaml"
        path.write_text(yaml.safe_dump(one))
        with pytest.raises(ContractError) as err:
            load_contract(str(path))
        assert expected in str(err.value), str(err.value)
    # All at once (less the two that are other values of a key already changed): each
    # named in the one message, field and cross-field problems alike.
    together = [n for n in NONSENSE if n[1] not in ("must sum to 1", "must be in (0, 1)")]
    everything = copy.deepcopy(raw)
    for change, _ in together:
        change(everything)
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(everything))
    with pytest.raises(ContractError) as err:
        load_contract(str(path))
    message = str(err.value)
    assert not [expected for _, expected in together if expected not in message], message


def test_empty_and_unreadable_batch_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    assert data.read_batch(empty, BANK).empty
    with pytest.raises(data.BatchError, match="does not exist"):
        data.read_batch(tmp_path / "missing.csv", BANK)


def test_period_keys_from_years_integers_and_dates_sort_in_time():
    years = data.period_keys(pd.Series(["1999", "2001", "2000"]), "year", None)
    assert list(years) == ["1999", "2001", "2000"]
    weeks = data.period_keys(pd.Series(["3", "12", "7"]), "week_no", None)
    assert sorted(weeks) == ["03", "07", "12"]  # zero-padded: text order is time order
    dates = pd.Series(["2020-01-05", "2020-03-01 10:30", "2020-11-30"])
    assert list(data.period_keys(dates, "d", None)) == ["2020-01", "2020-03", "2020-11"]
    assert list(data.period_keys(dates, "d", "quarter")) == ["2020Q1", "2020Q1", "2020Q4"]
    assert list(data.period_keys(dates, "d", "year")) == ["2020"] * 3
    with pytest.raises(ValueError, match="'d': row 1 has no value"):
        data.period_keys(pd.Series(["2020-01-05", ""]), "d", None)
    with pytest.raises(ValueError, match="'soon' is neither a whole number nor a date"):
        data.period_keys(pd.Series(["2020-01-05", "soon"]), "d", None)


def test_parquet_values_read_as_the_text_a_csv_holds():
    typed = pd.DataFrame({"code": pd.array([21, None, 3], dtype="Int64"),
                          "gappy": [1.0, None, 4.0], "x": [0.5, 1.25, None],
                          "when": pd.to_datetime(["2020-01-01", "2020-01-02 08:00", None],
                                                 format="mixed"),
                          "flag": [True, False, True], "s": ["a", None, "c"]})
    text = data.as_text_frame(typed)
    assert text.to_dict("list") == {
        "code": ["21", "", "3"], "gappy": ["1", "", "4"], "x": ["0.5", "1.25", ""],
        "when": ["2020-01-01", "2020-01-02T08:00:00", ""], "flag": ["true", "false", "true"],
        "s": ["a", "", "c"]}


def test_rows_without_a_label_are_kept_waiting_not_quarantined(bank_batches):
    raw = bank_batches["2008-05"].head(100).copy()
    raw.loc[[0, 1, 2], "y"] = ""  # not arrived yet
    result = data.validate_rows(data.parse_batch(raw, BANK, "2008-05"), BANK)
    assert len(result.valid) == 100 and result.quarantined.empty
    assert result.valid[TARGET].isna().sum() == 3
    labelled, waiting = split.apply_labels(result.valid, None, BANK)
    assert (len(labelled), waiting) == (97, 3)
    # With a key column, a label file fills them in (a row's own label is never replaced).
    keyed = BANK.model_copy(update={"key_column": "duration", "drop_columns": []})
    rows = data.validate_rows(data.parse_batch(raw, keyed, "2008-05"), keyed).valid
    arrived = pd.DataFrame({"request_id": [raw.loc[0, "duration"], raw.loc[3, "duration"]],
                            TARGET: [1, 1 - int(raw.loc[3, "y"] == "yes")]})
    labelled, waiting = split.apply_labels(rows, arrived, keyed)
    assert waiting == 2 and len(labelled) == 98
    assert labelled[TARGET].iloc[0] == 1  # row 0's label arrived
    assert labelled[TARGET].iloc[1] == int(raw.loc[3, "y"] == "yes")  # row 3 kept its own


def test_the_scratch_dir_of_a_killed_step_is_removed_by_the_next_step(tmp_path):
    """A step killed with SIGKILL leaves its scratch directory (its partial Parquet files);
    the next scratch directory opened under the same folder removes it, and leaves those
    of live processes and of other hosts (a shared volume) alone."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    step = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mlops_assets.lib import io\n"
         f"with io.scratch_dir({str(tmp_path)!r}, 'sealed_split') as work:\n"
         "    (work / 'part.parquet').write_bytes(b'x' * 1000)\n"
         "    print(work, flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    killed = Path(step.stdout.readline().strip())
    step.send_signal(signal.SIGKILL)
    step.wait(30)
    assert (killed / "part.parquet").is_file()  # what kill -9 leaves
    host = socket.gethostname().replace(".", "_")
    live = tmp_path / f".validate_batch.{host}.{os.getpid()}.abc123"
    elsewhere = tmp_path / f".validate_batch.otherhost.{step.pid}.def456"
    for d in (live, elsewhere):
        d.mkdir()
    with io.scratch_dir(tmp_path, "raw_batch") as work:
        assert work.is_dir() and work.name.startswith(f".raw_batch.{host}.{os.getpid()}.")
        assert not killed.exists()
        assert live.is_dir() and elsewhere.is_dir()
    assert not work.exists()


def test_postgres_urls_as_people_write_them_get_the_shipped_driver():
    from mlops_assets.platform import postgres

    for written in ("postgresql://u@h:5/db", "postgres://u@h:5/db",
                    "postgresql+psycopg2://u@h:5/db"):
        assert postgres.normalize_url(written) == "postgresql+psycopg2://u@h:5/db"
    with pytest.raises(ValueError, match="write postgresql://u@h:5/db"):
        postgres.normalize_url("postgresql+psycopg://u@h:5/db")
    with pytest.raises(ValueError, match="is not a URL"):
        postgres.normalize_url("u@h:5/db")


def test_contract_init_names_an_unreadable_file_and_never_writes_an_infinite_bound(tmp_path):
    from mlops_assets.config import ContractError
    from mlops_assets.lib.dataset import contract_init

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300).round(3).astype(str),
                          "c": rng.choice(["a", "b"], 300), "y": rng.choice(["0", "1"], 300)})
    frame.loc[[5, 9], "x"] = ["inf", "-inf"]
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    inferred = contract_init.infer(path, "y")
    spec = inferred.contract["numeric"]["x"]
    assert np.isfinite(spec["min"]) and np.isfinite(spec["max"])
    assert any("2 infinite value(s)" in line for line in inferred.review)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(path.read_bytes().replace(b"a,", "é,".encode("latin-1"), 3))
    with pytest.raises(ContractError, match=f"{latin} is not UTF-8 text .*iconv -f latin1"):
        contract_init.infer(latin, "y")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(ContractError, match=str(binary)):
        contract_init.infer(binary, "y")


@pytest.mark.parametrize("labels_apart", [False, True], ids=["label in the data", "--labels"])
def test_contract_init_drops_a_leaking_column_wherever_the_labels_come_from(tmp_path,
                                                                              labels_apart):
    """A column recorded after the outcome (the label with 3% noise, and a score that is
    the label plus noise) is dropped as a leak when the labels come in the data file and
    when they come apart, joined on a key (the labels file also repeats a key: the last
    label counts, and the review says so)."""
    from mlops_assets.lib.dataset import contract_init

    rng = np.random.default_rng(7)
    n = 900
    y = rng.random(n) < 0.3
    frame = pd.DataFrame({
        "id": [f"r{i:05d}" for i in rng.permutation(n)],
        "x": rng.normal(size=n).round(3), "c": rng.choice(["a", "b", "c"], n),
        "closing_fee": np.where(y ^ (rng.random(n) < 0.03), 25.0, 0.0),
        "recovery": np.where(y, rng.normal(3, 1, n), rng.normal(0, 1, n)).round(3)})
    label = np.where(y, "yes", "no")
    if labels_apart:
        frame.to_parquet(tmp_path / "rows.parquet", index=False)
        labels = pd.DataFrame({"id": frame["id"], "label": label}).sample(frac=1,
                                                                          random_state=1)
        labels = pd.concat([labels.head(1).assign(label="no" if label[0] == "yes" else "yes"),
                            labels])  # a repeated key, its first label wrong
        labels.to_parquet(tmp_path / "labels.parquet", index=False)
        inferred = contract_init.infer(tmp_path / "rows.parquet", "label",
                                       labels_path=tmp_path / "labels.parquet", key="id")
        assert any("1 key(s) labelled more than once" in line for line in inferred.review)
    else:
        frame.assign(label=label).to_csv(tmp_path / "rows.csv", index=False)
        inferred = contract_init.infer(tmp_path / "rows.csv", "label")
    kept = {*inferred.contract["numeric"], *inferred.contract["categorical"]}
    assert kept == {"x", "c"}, inferred.review
    for column in ("closing_fee", "recovery"):
        assert column in inferred.contract["drop_columns"]
        assert any(line.startswith(f"'{column}': predicts the label almost alone")
                   for line in inferred.review)


def test_a_kept_batch_is_the_content_its_name_says_while_the_file_is_landed_again(tmp_path):
    """raw_batch hashed the landing file, then copied it: a re-landing in between (a rename
    over it) stored one content under the other's hash, and the rows read next were a third
    read of the landing file. One read of one open file now hashes and copies."""
    import hashlib
    import threading

    landing = tmp_path / "landing" / "2008-05.csv"
    landing.parent.mkdir()
    contents = [b"age;job\n" + (f"{i};admin.\n" * 200_000).encode() for i in (1, 2)]
    for i, body in enumerate(contents):
        (tmp_path / f"v{i}").write_bytes(body)
    stop = threading.Event()

    def land_again():  # the landing protocol: a complete file renamed over the old one
        i = 0
        while not stop.is_set():
            part = landing.with_name(".2008-05.csv.part")
            os.link(tmp_path / f"v{i % 2}", part)
            os.replace(part, landing)
            i += 1

    landing.write_bytes(contents[0])
    writer = threading.Thread(target=land_again)
    writer.start()
    try:
        # each into a new backup folder, so that each writes its copy (main's order of
        # hashing, then copying: 7 of 40 copies held the other content)
        kept = [data.keep_batch(landing, tmp_path / f"backup{n}", "2008-05")
                for n in range(40)]
        again = [data.keep_batch(landing, tmp_path / "backup", "2008-05") for _ in range(10)]
    finally:
        stop.set()
        writer.join()
    for sha, copy in kept + again:
        body = copy.read_bytes()
        assert body in contents and hashlib.sha256(body).hexdigest() == sha == copy.stem
        assert copy.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in (tmp_path / "backup" / "2008-05").iterdir()) == sorted(
        {copy.name for _, copy in again})  # no temporary file left, one copy per content
    with pytest.raises(data.BatchError, match="gone.csv cannot be read"):
        data.keep_batch(tmp_path / "gone.csv", tmp_path / "backup", "gone")
    assert list((tmp_path / "backup" / "gone").iterdir()) == []


def _killed_while_writing(code: str) -> int:
    """Run ``code`` in a child that prints a line once it is inside the write, then SIGKILL
    it there: what kill -9 (or the OOM killer) leaves of a half-done write. Its pid."""
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    return child.pid


def test_what_a_killed_write_leaves_is_removed_by_the_next_write_of_the_same_file(tmp_path):
    """An atomic write (a model, a pointer, a report) and a kept batch write a hidden
    temporary file first; a process killed outright cannot remove it. The next write of the
    same file removes those of this host's dead processes (never a live process's, nor
    another host's on a shared volume), and nothing is left once it is done."""
    import os
    import socket

    target = tmp_path / "pointers" / "champion.json"
    _killed_while_writing(
        "import time\nfrom mlops_assets.lib import io\n"
        f"with io.atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('half')\n    print('writing', flush=True)\n    time.sleep(120)\n")
    assert [p.name for p in target.parent.iterdir()][0].startswith(".champion.json.")
    host = socket.gethostname().replace(".", "_")
    live = target.parent / f".champion.json.{host}.{os.getpid()}.abc.tmp"
    elsewhere = target.parent / ".champion.json.otherhost.1.def.tmp"
    for p in (live, elsewhere):
        p.write_text("x")
    io.write_json(target, {"champion": "m:1"})
    assert io.read_json(target) == {"champion": "m:1"}
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        ["champion.json", live.name, elsewhere.name])

    # a landed file read from a pipe that stalls: the copy is killed half done
    fifo = tmp_path / "2008-05.csv"
    os.mkfifo(fifo)
    backup = tmp_path / "backup"
    writer = None
    try:
        import threading

        def feed():
            nonlocal writer
            writer = open(fifo, "wb")  # noqa: SIM115 (closed below)
            writer.write(b"age;job\n" * 1000)
            writer.flush()

        feeding = threading.Thread(target=feed, daemon=True)  # never holds pytest up
        feeding.start()
        _killed_while_writing(
            "import builtins, sys\nfrom mlops_assets.lib.dataset import data\n"
            "real = builtins.open\n"
            "def told(*a, **k):\n"
            "    f = real(*a, **k)\n"
            f"    if str(a[0]) == {str(fifo)!r}:\n"
            "        print('writing', flush=True)\n"
            "    return f\n"
            "builtins.open = told\n"
            f"data.keep_batch({str(fifo)!r}, {str(backup)!r}, '2008-05')\n")
        feeding.join(30)
    finally:
        if writer is not None:
            writer.close()
    folder = backup / "2008-05"
    assert [p.name for p in folder.iterdir()][0].startswith(".landing.")  # kill -9 left it
    landed = tmp_path / "landed.csv"
    landed.write_bytes(b"age;job\n41;admin.\n")
    sha, kept = data.keep_batch(landed, backup, "2008-05")
    assert [p.name for p in folder.iterdir()] == [kept.name] == [f"{sha}.csv"]
