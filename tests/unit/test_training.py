"""Training, evaluation and gate logic in isolation, on real Bank rows."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets import bulk_threads
from mlops_assets.config import PERIOD, TARGET, load_contract
from mlops_assets.lib import evaluation, io
from mlops_assets.lib.dataset import data, features, split
from mlops_assets.lib.dataset.rows import STREAMED, FeatureRows
from mlops_assets.lib.governance import gate
from mlops_assets.lib.training import search
from mlops_assets.lib.training.model import ServingModel

BANK = load_contract("bank")


@pytest.fixture(scope="module")
def feature_frames(bank_batches):
    """Each split's features, label and period, as the features assets store them."""
    frames = []
    for key in ("2008-11", "2009-04", "2009-05"):
        valid = data.validate_rows(data.parse_batch(bank_batches[key], BANK, key), BANK).valid
        frames.append(split.with_split(valid, BANK))
    rows = pd.concat(frames, ignore_index=True)
    out = {}
    for name in ("train", "validation", "test"):
        part = rows[rows["_split"] == name].reset_index(drop=True)
        out[name] = features.build_features(part, BANK).assign(
            **{TARGET: part[TARGET].astype("Int8"), PERIOD: part[PERIOD]})
    return out


@pytest.fixture(scope="module")
def splits(feature_frames):
    return {name: (features.to_matrix(frame, BANK), frame[TARGET].to_numpy().astype(int))
            for name, frame in feature_frames.items()}


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_final_fit_streamed_from_the_file_is_the_in_memory_fit(feature_frames, splits,
                                                                tmp_path, monkeypatch,
                                                                threads):
    """A training set too large for memory is fitted from its file a chunk at a time. With
    the whole set as the search "sample", that fit must be the in-memory fit exactly: the
    same rows, bins and rounds give the same trees, on one thread or two (the search, the
    streamed fit and the test-set predictions run on ``bulk_threads()``)."""
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    assert bulk_threads() == int(threads)  # OpenMP waits passively in this process
    path = io.write_parquet(tmp_path / "train_features.parquet", feature_frames["train"])
    rows = FeatureRows(path, BANK, chunk_rows=1000)  # 9 chunks, LightGBM batches
    (xt, yt), (xv, yv), (xs, _) = splits["train"], splits["validation"], splits["test"]
    assert len(yt) > 8000
    spec = search.TrainingSpec(n_trials=2, seed=7)
    memory = search.train(xt, yt, xv, yv, BANK, spec, log=lambda _: None)
    streamed = search.train(xt, yt, xv, yv, BANK, spec, log=lambda _: None, full=rows)
    rounds = memory.best_iteration
    assert streamed.trained_on == {"where": STREAMED, "search_rows": len(yt),
                                   "train_rows": len(yt), "rounds": rounds}
    assert streamed.booster.num_trees() == rounds == memory.booster.num_trees()
    np.testing.assert_array_equal(memory.booster.predict(xs, num_iteration=rounds),
                                  streamed.booster.predict(xs))
    assert streamed.threshold == memory.threshold
    # Evaluation and the gate predict a test frame a chunk of rows at a time: the same numbers.
    served = ServingModel(streamed.booster, BANK, streamed.threshold, "v")
    np.testing.assert_array_equal(served.predict_frame(feature_frames["test"], chunk_rows=700),
                                  served.predict_matrix(xs))


def test_feature_rows_sample_and_filter_a_chunk_at_a_time(feature_frames, tmp_path):
    frame = feature_frames["train"]
    path = io.write_parquet(tmp_path / "train_features.parquet", frame)
    rows = FeatureRows(path, BANK, chunk_rows=700)
    sample = rows.sample(1000, seed=3)
    expected = frame.iloc[io.sample_positions(len(frame), 1000, 3)]
    pd.testing.assert_frame_equal(sample, expected[sample.columns].reset_index(drop=True))
    recent = rows.only(["2009-05"])
    kept = frame[frame[PERIOD] == "2009-05"].reset_index(drop=True)
    assert len(recent) == len(kept) > 0 and len(rows) == len(frame)
    np.testing.assert_array_equal(recent.labels(), kept[TARGET].to_numpy(np.float32))
    assert rows.period_values() == sorted(frame[PERIOD].unique())
    matrix = np.concatenate([recent.lightgbm_sequence(len(kept))[i:i + 333]
                             for i in range(0, len(kept), 333)])
    np.testing.assert_array_equal(matrix, features.to_matrix(kept, BANK))
    with pytest.raises(TypeError, match="front to back"):
        recent.lightgbm_sequence(len(kept))[5]


def test_same_data_and_config_give_identical_predictions(splits):
    (xt, yt), (xv, yv), (xs, _) = splits["train"], splits["validation"], splits["test"]
    spec = search.TrainingSpec(n_trials=3, seed=7)
    a = search.train(xt, yt, xv, yv, BANK, spec, log=lambda _: None)
    b = search.train(xt, yt, xv, yv, BANK, spec, log=lambda _: None)
    assert a.params == b.params and a.threshold == b.threshold
    np.testing.assert_array_equal(a.booster.predict(xs), b.booster.predict(xs))
    other = search.train(xt, yt, xv, yv, BANK, search.TrainingSpec(n_trials=3, seed=8),
                           log=lambda _: None)
    assert other.params != a.params
    # The thread count is a matter of speed only: two threads give the same model.
    two = search.train(xt, yt, xv, yv, BANK, search.TrainingSpec(n_trials=3, seed=7,
                                                                    num_threads=2),
                         log=lambda _: None)
    assert spec.num_threads == bulk_threads() == 1  # pinned by the tests (conftest)
    assert two.params["num_threads"] == 2
    assert {k: v for k, v in two.params.items() if k != "num_threads"} == \
        {k: v for k, v in a.params.items() if k != "num_threads"}
    np.testing.assert_array_equal(a.booster.predict(xs), two.booster.predict(xs))


def test_trials_judged_at_once_are_the_trials_judged_in_turn(splits):
    """The sampler is asked ``trials_at_once`` trials at a time on any number of cores: a
    search judging each round's trials at once, on threads, tries the same parameters
    (sampled ones included, past the first trials) with the same scores as one judging them
    in turn, in the same order, and keeps the same model."""
    (xt, yt), (xv, yv), (xs, _) = splits["train"], splits["validation"], splits["test"]
    spec = search.TrainingSpec(n_trials=13, seed=7, max_rounds=40)
    assert spec.num_threads == 1 and spec.trials_at_once == 2
    in_turn = search.train(xt, yt, xv, yv, BANK, spec, log=lambda _: None)
    at_once = search.train(xt, yt, xv, yv, BANK, replace(spec, num_threads=2),
                           log=lambda _: None)
    assert [t["trial"] for t in at_once.trials] == list(range(13))
    assert at_once.trials == in_turn.trials
    assert len({t["learning_rate"] for t in in_turn.trials}) == 13  # sampled, not repeated
    np.testing.assert_array_equal(in_turn.booster.predict(xs), at_once.booster.predict(xs))


RETURNS_CLEAN = """
import gc, json, sys, weakref
import numpy as np
import lightgbm as lgb
from mlops_assets.config import load_contract
from mlops_assets.lib.training import search
assert "optuna" not in sys.modules, "imported before the search"

class Held:  # what the step that trains holds (its frames, its locals)
    pass

def step():
    held, data = Held(), np.load(sys.argv[1])
    search.train(data["xt"], data["yt"], data["xv"], data["yv"], load_contract("bank"),
                 search.TrainingSpec(n_trials=2, max_rounds=20), log=lambda _: None)
    return weakref.ref(held)

held = step()
gc.collect()
print(json.dumps({"held": held() is not None,
                  "datasets": sum(isinstance(o, lgb.Dataset) for o in gc.get_objects())}))
"""


def test_a_search_keeps_nothing_of_its_caller_alive_once_it_returns(splits, tmp_path):
    """Optuna keeps the exception of each optional import it cannot make, traceback and all
    (``optuna._imports.try_import``). Imported first inside a step, it kept that step's
    frames alive for good, and every local in them: at 1000x, the streamed fit's 850 MB
    dataset and the search's samples after ``candidate_model`` returned, under the next
    step's peak. In a fresh process, the first search leaves neither its caller's locals
    nor a LightGBM dataset behind."""
    (xt, yt), (xv, yv) = splits["train"], splits["validation"]
    np.savez(tmp_path / "rows.npz", xt=xt, yt=yt, xv=xv, yv=yv)
    done = subprocess.run([sys.executable, "-c", RETURNS_CLEAN, str(tmp_path / "rows.npz")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"held": False, "datasets": 0}


def test_training_refuses_one_class(splits):
    (xt, yt), (xv, yv) = splits["train"], splits["validation"]
    with pytest.raises(ValueError, match="needs both classes"):
        search.train(xt, np.zeros_like(yt), xv, yv, BANK, search.TrainingSpec(n_trials=1))


def test_threshold_rules():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0, 0, 1] * 20)
    p = np.linspace(0.01, 0.99, len(y))
    assert search.choose_threshold(y, p, "fixed:0.3") == 0.3
    t = search.choose_threshold(y, p, "min_recall:0.9")
    assert (p[y == 1] >= t).mean() >= 0.9
    with pytest.raises(ValueError, match="unknown threshold rule 'best'"):
        search.choose_threshold(y, p, "best")


def test_fast_auc_and_bootstrap_ci_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = np.round(rng.random(2000) + 0.4 * y, 2)  # ties on purpose
    assert evaluation._fast_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    lo, hi = evaluation.bootstrap_auc_ci(y, p, n=300)
    assert lo < roc_auc_score(y, p) < hi and hi - lo < 0.1


def test_paired_bootstrap_blocks_a_worse_challenger_and_passes_an_equal_one():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1500)
    good = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
    policy = gate.GatePolicy()
    same = evaluation.paired_bootstrap(y, good, good, n=200)
    assert gate.non_inferior(same, policy)[0]
    noise = rng.random(len(y))
    worse = evaluation.paired_bootstrap(y, good, noise, n=200)
    ok, why = gate.non_inferior(worse, policy)
    assert not ok and "AUC delta -0." in why
    assert gate.non_inferior(None, policy) == (True, "no champion yet: nothing to compare against")


def test_calibration_table_bins_every_row():
    rng = np.random.default_rng(3)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    table = evaluation.calibration_table(y, p)
    assert table["rows"].sum() == 1000
    assert np.allclose(table["mean_predicted"], table["observed_rate"], atol=0.15)


def test_recent_rows_reach_back_until_enough_rows():
    test = pd.DataFrame({"_period": ["a"] * 500 + ["b"] * 300 + ["c"] * 100 + ["d"] * 50})
    assert set(gate.recent_rows(test, 2, 0)["_period"]) == {"c", "d"}
    assert set(gate.recent_rows(test, 2, 400)["_period"]) == {"b", "c", "d"}
    assert len(gate.recent_rows(test, 2, 10_000)) == 950


def test_slices_judged_against_the_champion_not_the_overall_auc():
    """The issue's case: age drives the label, so within every age band the AUC is far
    below the overall AUC, for any model. That is no regression: only a slice the challenger
    serves worse than the champion is."""
    rng = np.random.default_rng(5)
    n = 6000
    age = rng.integers(18, 90, n)
    band = np.digitize(age, [30, 45, 60]).astype(str).astype(object)
    other = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.08 * (age - 50) + 0.5 * other)))).astype(int)
    champion = 1 / (1 + np.exp(-(0.08 * (age - 50) + 0.5 * other)))
    policy = gate.GatePolicy()
    same_quality = np.clip(champion + rng.normal(0, 0.01, n), 0, 1)
    table = gate.slice_regressions({"age_band": band}, y, champion, same_quality, n=100)
    assert len(table) == 4
    overall = evaluation._fast_auc(y, champion)
    assert (table["champion_auc"] < overall - 0.1).all()  # what failed the old rule
    ok, why = gate.slices(table, gate.error_rate_gaps({}, y, y), policy)
    assert ok, why
    # A challenger that lost the signal for the oldest band is worse there, and only there.
    broken = same_quality.copy()
    old = band == "3"
    broken[old] = rng.random(old.sum())
    table = gate.slice_regressions({"age_band": band}, y, champion, broken, n=100)
    ok, why = gate.slices(table, gate.error_rate_gaps({}, y, y), policy)
    assert not ok and "age_band=3" in why and "worse than the champion" in why


def test_error_rate_disparity_beyond_sampling_error_blocks():
    rng = np.random.default_rng(6)
    n = 4000
    group = rng.choice(np.array(["a", "b"], dtype=object), n)
    y = rng.integers(0, 2, n)
    fair = np.where(rng.random(n) < 0.8, y, 1 - y)  # 20% errors in both groups
    policy = gate.GatePolicy()
    ok, why = gate.slices(None, gate.error_rate_gaps({"sex": group}, y, fair), policy)
    assert ok and "largest error-rate disparity" in why
    unfair = fair.copy()
    missed = (group == "b") & (y == 1) & (rng.random(n) < 0.4)  # b's positives missed more
    unfair[missed] = 0
    gaps = gate.error_rate_gaps({"sex": group}, y, unfair)
    ok, why = gate.slices(None, gaps, policy)
    assert not ok and "false negative rate" in why and "at b" in why
    # Small groups: the same gap on 60 rows is within sampling error.
    few = gate.error_rate_gaps({"sex": group[:120]}, y[:120], unfair[:120], min_rows=50)
    assert few.empty or few["excess"].max() < gaps["excess"].max()


def test_the_pipeline_trains_with_the_one_training_definition():
    # The launchpad's defaults are spec_for's (TrainingSpec + the contract's budget and
    # threshold rule): the backtest and the CLI train exactly as the pipeline does.
    from mlops_assets.defs.training.assets import TrainingConfig

    assert TrainingConfig().spec(BANK) == search.spec_for(BANK)
    assert search.spec_for(BANK).threshold_rule == BANK.training.threshold_rule == "cost:5"
    assert TrainingConfig(objective_metric="auc").spec(BANK) != search.spec_for(BANK)
    assert TrainingConfig(threshold_rule="max_f1").spec(BANK).threshold_rule == "max_f1"


def test_sample_positions_are_a_deterministic_ordered_subset():
    from mlops_assets.lib.io import sample_positions

    a, b = sample_positions(10_000, 500, seed=3), sample_positions(10_000, 500, seed=3)
    assert len(a) == 500 == len(set(a)) and (a == b).all() and (np.diff(a) > 0).all()
    assert a.max() < 10_000 and not (a == sample_positions(10_000, 500, seed=4)).all()
    assert (sample_positions(300, 500) == np.arange(300)).all()  # small: every row


def test_small_data_is_judged_by_folds_and_the_search_never_loses_to_the_defaults(tmp_path):
    """The quick form of the quality benchmark (benchmarks/quality.py; the full one is in
    make bench): scikit-learn's 569-row breast-cancer data brought in by contract init. The
    first trial is LightGBM's defaults, the search keeps the best by its own estimate (so
    never below the defaults' estimate), trials are judged by stratified 5-fold CV, and on
    the sealed test rows the champion is no worse than LGBMClassifier() and a logistic
    regression trained on the same rows."""
    from benchmarks import quality

    contract = quality.breast_cancer(tmp_path)
    run = quality.one_run(quality.valid_rows(contract), contract, seed=0, n_trials=6)
    assert run["judged_by"].startswith("5-fold cross-validation over the")
    assert run["search_best_vs_defaults"]
    assert run["champion"] >= run["lightgbm_defaults"] - 0.005, run
    assert run["champion"] >= run["logistic_regression"] - 0.005, run


def test_the_first_trial_is_lightgbms_defaults_and_every_space_holds_them():
    defaults = search.FIRST_TRIALS[0]
    assert defaults == {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20,
                        "feature_fraction": 1.0, "lambda_l2": 1e-3}
    for rows in (300, 900, 4000, 40_000):
        space = search.SearchSpace().for_rows(rows)
        assert search._holds(space, defaults), (rows, space)
    small, large = search.SearchSpace().for_rows(900), search.SearchSpace()
    assert small.num_leaves[0] < large.num_leaves[0]
    stumps = search.EXACT_TRIALS[0]
    assert stumps["num_leaves"] == 2
    assert search._holds(small, stumps)  # tried as it is on small data
    assert not search._holds(large, stumps)  # and left out on large data
    # Extremely randomized trees are a choice on small data only, and the first trials
    # there are LightGBM's own (not randomized) trees; on large data no trial names it.
    assert small.extra_trees == (False, True) and large.extra_trees == (False,)
    assert search._within(defaults, small) == defaults | {"extra_trees": False}
    assert search._within(defaults, large) == defaults
    assert small.min_child_samples[1] < large.min_child_samples[1]
