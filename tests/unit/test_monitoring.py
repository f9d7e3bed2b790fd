"""Drift, live metrics and the retraining decision, in isolation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_contract
from mlops_assets.lib.dataset import data, features
from mlops_assets.lib.monitoring import drift, live
from mlops_assets.lib.monitoring.retraining import (
    Action,
    Judged,
    RetrainPolicy,
    RetrainState,
    decide,
)

BANK = load_contract("bank")


@pytest.fixture(scope="module")
def frames(bank_batches):
    def feats(keys):
        out = []
        for k in keys:
            valid = data.validate_rows(data.parse_batch(bank_batches[k], BANK, k), BANK).valid
            out.append(features.build_features(valid, BANK))
        return pd.concat(out, ignore_index=True)

    return feats(["2008-05", "2008-06"]), feats(["2009-04", "2009-05"])


def test_scores_and_verdicts_match_evidently(frames):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = frames
    ours = {c.column: c for c in drift.compute_drift(reference, current, BANK).columns}
    cols = [c for c in BANK.features if c != "pdays"]  # all missing in 2008: Evidently refuses

    def prepared(df):
        f = df[cols].astype({c: object for c in BANK.categorical})
        return Dataset.from_pandas(f, data_definition=DataDefinition(
            numerical_columns=[c for c in cols if c in BANK.numeric],
            categorical_columns=list(BANK.categorical)))

    snap = Report([DataDriftPreset()]).run(current_data=prepared(current),
                                           reference_data=prepared(reference))
    theirs = {m["config"]["column"]: m["value"] for m in snap.dict()["metrics"]
              if m["metric_name"].startswith("ValueDrift")}
    assert set(theirs) == set(cols)
    for col in cols:
        assert ours[col].score == pytest.approx(float(theirs[col]), rel=1e-9, abs=1e-12), col
    assert ours["pdays"].drifted and "all missing in the reference" in ours["pdays"].note


def test_edge_cases_give_a_verdict_not_a_crash(frames):
    reference, current = frames
    empty = drift.compute_drift(reference, current.iloc[:0], BANK)
    assert empty.verdict.startswith("empty window") and empty.drifted_share == 0.0
    cur = current.head(3000).copy()
    cur["age"] = np.nan  # all-null column
    cur["campaign"] = 3.0  # constant column
    cur["job"] = pd.Categorical(["student"] * len(cur), categories=reference["job"].cat.categories)
    result = {c.column: c for c in drift.compute_drift(reference, cur, BANK).columns}
    assert result["age"].drifted and result["age"].note == "all missing in the current window"
    assert result["campaign"].method == "wasserstein_norm" and np.isfinite(result["campaign"].score)
    assert result["job"].drifted
    raw = pd.DataFrame({"x": ["a", "b"] * 700})
    unseen = drift.column_drift(raw["x"], pd.Series(["a", "zzz"] * 50), False, "x")
    assert "unseen in the reference: ['zzz']" in unseen.note and unseen.drifted
    same = drift.column_drift(pd.Series([1.0] * 2000), pd.Series([1.0] * 10), True, "c")
    assert not same.drifted and same.note == "constant in both"


def test_small_reference_uses_ks_and_chi_square():
    rng = np.random.default_rng(0)
    ks = drift.column_drift(pd.Series(rng.normal(size=500)), pd.Series(rng.normal(1, 1, 500)),
                            True, "n")
    assert ks.method == "ks" and ks.drifted and ks.score < 0.05
    chi = drift.column_drift(pd.Series(list("abc") * 100), pd.Series(list("abc") * 50), False, "c")
    assert chi.method == "chisquare" and not chi.drifted


def test_live_metrics_join_labels_and_handle_a_single_class():
    rows = pd.DataFrame({"request_id": list("abcdef"), "probability": [.9, .8, .2, .1, .7, .3],
                         "label": [1, 1, 0, 0, 1, 0]})
    labels = pd.DataFrame({"request_id": list("abcd"), "_target": [1, 0, 0, 0]})
    m = live.live_metrics(rows, labels)
    assert m["volume"] == 6 and m["labelled"] == 4 and m["roc_auc"] == 1.0
    assert m["precision"] == 0.5 and m["recall"] == 1.0
    assert m["calibration_gap"] == pytest.approx(0.25 - 0.5)
    single = live.live_metrics(rows, labels.assign(_target=0))
    assert single["verdict"].startswith("single class") and np.isnan(single["roc_auc"])
    none = live.live_metrics(rows, labels.iloc[:0])
    assert none == {"volume": 6, "labelled": 0, "verdict": "no labels yet for this window"}


def test_feedback_errors_name_file_and_value(tmp_path):
    (tmp_path / "a.csv").write_text("request_id,y\nr1,yes\nr2,maybe\n")
    with pytest.raises(live.FeedbackError, match="a.csv: unknown label 'maybe'.*row 3"):
        live.read_feedback(tmp_path, BANK)


POLICY = RetrainPolicy(cooldown_s=100, min_new_rows=1000)


def _judged(record_id: int, window: str, kind: str, why: str = "") -> Judged:
    return Judged(record_id, window, Action(kind, why or f"window {window}: {kind}", {}))


def test_retrain_decision_launches_once_per_cause_with_cooldown():
    state = RetrainState()
    quiet = decide(0, state, [], 10, 5, POLICY)
    assert quiet.run_key is None and "10 new labelled rows (< 1000)" in quiet.reason
    held = decide(0, state, [_judged(3, "2009-07", "hold", "AUC as at validation")], 10, 5,
                  POLICY)
    assert held.run_key is None and "AUC as at validation" in held.reason
    fell = [_judged(7, "2009-08", "retrain", "window 2009-08: ranking fell")]
    first = decide(10, held.state, fell, 10, 5, POLICY)
    assert (first.run_key, first.job) == ("retrain:retrain-7", "retrain")
    assert "ranking fell" in first.reason
    again = decide(20, first.state, fell, 10, 5, POLICY)  # the same judgement: handled
    assert again.run_key is None
    # Inside the cooldown a window that calls for retraining is recalibrated instead.
    more = [*fell, _judged(9, "2009-09", "retrain", "window 2009-09: loss beyond recal.")]
    cooling = decide(50, first.state, more, 10, 5, POLICY)
    assert (cooling.run_key, cooling.job) == ("recalibrate:recalibrate-9", "recalibrate")
    assert "held by the cooldown (60 s left)" in cooling.reason
    assert cooling.state.last_launch == 10  # a recalibration does not restart the cooldown
    recal = [*more, _judged(11, "2009-10", "recalibrate", "calibration off")]
    assert decide(60, cooling.state, recal, 10, 5, POLICY).job == "recalibrate"
    # Rows alone inside the cooldown wait; after it, they retrain.
    waiting = decide(60, cooling.state, more, 1500, 42, POLICY)
    assert waiting.run_key is None and waiting.reason.startswith("cooldown")
    rows = decide(500, cooling.state, more, 1500, 42, POLICY)
    assert rows.run_key == "retrain:rows-42" and rows.state.rows_after == 42
    # The same window judged again (re-monitored with new labels), same action: no new run.
    repeat = [_judged(12, "2009-08", "retrain", "still fell")]
    assert decide(900, rows.state, repeat, 0, 42, POLICY).run_key is None
    # An old cursor (failed-check fields) starts over instead of failing the sensor.
    assert RetrainState.from_dict({"handled_check_id": 4, "rows_after": 3}).rows_after == 3


def test_window_reads_only_the_days_it_touches():
    class Days(dict):
        read: list = []

        def __getitem__(self, day):
            self.read.append(day)
            return super().__getitem__(day)

    def day(d, *hours):
        ts = [live.day_window(d).start + h * 3600 for h in hours]
        return pd.DataFrame({"ts": ts, "request_id": [f"{d}-{h}" for h in hours]})

    days = Days({"2026-01-01": day("2026-01-01", 1, 23), "2026-01-02": day("2026-01-02", 0, 5),
                 "2026-01-09": day("2026-01-09", 3)})
    start = live.day_window("2026-01-01").start + 12 * 3600
    window = live.Window("w", start, start + 14 * 3600)  # 12:00 to 02:00 next day
    rows = live.window_rows(days, window)
    assert list(rows["request_id"]) == ["2026-01-01-23", "2026-01-02-0"]
    assert sorted(Days.read) == ["2026-01-01", "2026-01-02"]  # 2026-01-09 never read
    empty = live.window_rows({}, window)
    assert len(empty) == 0 and "probability" in empty.columns


def test_a_logged_table_reads_back_with_its_missing_text_as_none(tmp_path):
    """Text inputs are written dictionary-encoded; a missing value (or a column of them)
    comes back as None, numbers as numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_assets.lib.serving import predlog

    inputs = pd.DataFrame({"job": ["admin.", None, "admin.", "retired"],
                           "poutcome": [None] * 4, "age": [30.0, np.nan, 41.0, 62.0]})
    answer = pa.table({"request_id": ["r-0", "r-1", "r-2", "r-3"],
                       "probability": [0.1, 0.2, 0.3, 0.4], "label": [0, 0, 1, 1],
                       "model_version": ["m:1"] * 4, "variant": ["champion"] * 4})
    path = predlog.PredictionLog(tmp_path).write_table(inputs, answer, 1.5)
    stored = pq.read_table(path).schema
    assert pa.types.is_dictionary(stored.field("inputs.job").type)
    logged = predlog.read(tmp_path)
    assert [r["job"] for r in logged["inputs"]] == ["admin.", None, "admin.", "retired"]
    assert [r["poutcome"] for r in logged["inputs"]] == [None] * 4
    assert logged["inputs"][1]["age"] is None and logged["inputs"][3]["age"] == 62.0


def test_a_label_file_corrected_in_place_at_the_same_size_changes_the_fingerprint(tmp_path):
    """feedback_sensor re-reads the labels when ``live.fingerprint`` of the folder changes.
    It held names and sizes only, so a label corrected in place ("0" -> "1": the same size)
    was never read. It now holds each file's identity (``io.file_identity``)."""
    labels = tmp_path / "labels-1.csv"
    labels.write_text("request_id,y\nr1,0\nr2,1\n")
    before = live.fingerprint(tmp_path, "*.csv")
    assert live.fingerprint(tmp_path, "*.csv") == before  # nothing changed: the same
    labels.write_text("request_id,y\nr1,1\nr2,1\n")
    assert live.fingerprint(tmp_path, "*.csv") != before


_SCHEDULE_STATUS = ("from mlops_assets.definitions import build_definitions; import sys; "
                    "print(build_definitions(sys.argv[1], 'bank').resolve_schedule_def("
                    "'daily_monitoring').default_status.value)")


def test_the_replay_defines_its_windows_and_the_daily_schedule_does_not(tmp_path):
    """The replay closes a window per month of traffic it sends. The daily schedule (00:10
    UTC) would define yesterday's window over the same traffic, monitored apart from the
    months: a replay test run that crossed 00:10 UTC monitored a window "2026-12-06" and
    failed. The replay's code location does not run it; anyone else's does."""
    from mlops_assets import replay

    def status(env: dict[str, str]) -> str:
        done = subprocess.run([sys.executable, "-c", _SCHEDULE_STATUS, str(tmp_path)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    settings = replay.ReplaySettings(months=2)
    assert status(replay.environment(tmp_path, BANK, settings)) == "STOPPED"
    assert status({}) == "RUNNING"
