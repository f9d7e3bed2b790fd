"""LightGBM with a seeded Optuna search, early stopping on validation, and a decision threshold
chosen on validation.

The search starts from LightGBM's defaults and a few known-good configurations, so by its own
estimate it never does worse than them. Below ``CV_BELOW_ROWS`` train + validation rows one
validation set is too small to judge a trial (~100 rows on a 900-row dataset pick whatever
fits that set's noise): trials are then judged by stratified k-fold cross-validation over
train + validation (stratified by label and period), the final model is refit on all of it
with the rounds the folds chose, and the threshold comes from out-of-fold predictions. The
search space widens with fewer rows (fewer leaves down to boosted stumps, smaller leaves
allowed, more L2, extremely randomized trees as a choice).

Class imbalance (Bank: ~11% positives) is handled at the decision threshold, not by
reweighting: reweighting classes distorts the predicted probabilities, and the gate, the
calibration report and the monitoring all read those probabilities (log loss, Brier, observed
vs predicted rate). ``class_weight="balanced"`` is available and sets ``scale_pos_weight``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_assets import bulk_threads
from mlops_assets.config import DatasetContract
from mlops_assets.lib.dataset.rows import STREAMED, FeatureRows
from mlops_assets.lib.training import dask_training
from mlops_assets.lib.training.dask_training import ClusterSpec

# LightGBM (which imports scikit-learn) and Optuna are imported where a model is trained or
# loaded: 2.2 s of the 6 s every run process spent importing the code location, and most runs
# (ingestion, monitoring) never touch a model.
if TYPE_CHECKING:
    import lightgbm as lgb
    import optuna


@dataclass(frozen=True)
class SearchSpace:
    learning_rate: tuple[float, float] = (0.02, 0.2)
    num_leaves: tuple[int, int] = (8, 96)
    min_child_samples: tuple[int, int] = (10, 300)
    feature_fraction: tuple[float, float] = (0.5, 1.0)
    lambda_l2: tuple[float, float] = (1e-3, 30.0)
    # A choice, not a range: LightGBM's extremely randomized trees (each feature's split
    # threshold drawn at random) average out the noise a few hundred rows fit.
    extra_trees: tuple[bool, ...] = (False,)

    def for_rows(self, rows: int) -> SearchSpace:
        """The space for ``rows`` training rows: on small data trees down to stumps (two
        leaves: an additive model, the trees' counterpart of a logistic regression),
        leaves down to 5 rows are allowed and a leaf may not need more than a twentieth of
        the rows, and extremely randomized trees are a choice; never narrower than what
        holds LightGBM's defaults (31 leaves, 20 rows)."""
        if rows >= CV_BELOW_ROWS:
            return self
        return replace(self, num_leaves=(2, max(31, min(self.num_leaves[1], rows // 20))),
                       min_child_samples=(5, max(20, min(self.min_child_samples[1],
                                                         rows // 20))),
                       lambda_l2=(self.lambda_l2[0], max(self.lambda_l2[1], 100.0)),
                       extra_trees=(False, True))


# Below this many train + validation rows, trials are judged by k-fold cross-validation.
CV_BELOW_ROWS = 5000
CV_FOLDS = 5
# Below this many train + validation rows, a round's trials are judged at once (TrainingSpec.
# trials_at_once), one thread each: the demo's 26k rows, 20 trials 7.5-7.9 -> 5.2-5.8 s; 208k
# rows, 6 trials 7.9 -> 7.0 s. At 500k rows two 1-thread fits at once are no faster than one
# 2-thread fit after the other (14.0 vs 13.4 s) and would hold a binned dataset each.
CONCURRENT_BELOW_ROWS = 200_000
# The first trials: LightGBM's defaults (lambda_l2 0 is the space's floor), then two
# configurations that do well on small tabular data (shallow trees, a slower rate), then
# boosted stumps: an additive model, which on a few hundred rows of near-linear data is what
# a logistic regression wins with (Bank at 500 rows: 0.807 sealed-test AUC with it, 0.768
# without, 0.780 for the regression; docs/benchmarks.md). Each is clipped into the space; a
# trial the space cannot hold as it is (stumps on large data) is left out, not clipped into
# a twin of another.
FIRST_TRIALS = (
    {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20,
     "feature_fraction": 1.0, "lambda_l2": 1e-3},
    {"learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20,
     "feature_fraction": 0.8, "lambda_l2": 1.0},
    {"learning_rate": 0.03, "num_leaves": 7, "min_child_samples": 10,
     "feature_fraction": 0.7, "lambda_l2": 3.0},
)
# After them, where the space holds them unclipped (small data): boosted stumps.
EXACT_TRIALS = (
    {"learning_rate": 0.05, "num_leaves": 2, "min_child_samples": 10,
     "feature_fraction": 0.8, "lambda_l2": 1.0},
)


@dataclass(frozen=True)
class TrainingSpec:
    """How a model is trained: the one definition. The pipeline's launchpad config
    (TrainingConfig), the backtest, the benchmarks and the test fixtures all start from
    these defaults. The search minimises validation log loss: the gate and the monitoring
    judge probabilities (log loss, calibration), not only ranking."""

    n_trials: int = 20
    timeout_s: float | None = None
    seed: int = 42
    max_rounds: int = 1000
    early_stopping_rounds: int = 50
    objective_metric: str = "binary_logloss"  # or "auc"
    class_weight: str = "none"  # or "balanced"
    threshold_rule: str = "max_f1"  # or "fixed:0.5", "min_recall:0.6" or "cost:5"
    # LightGBM's threads per fit: every core, where OpenMP threads wait passively
    # (``bulk_threads``; OMP_NUM_THREADS pins it, as the tests do). Spinning, a 2-thread fit
    # sharing its cores with another process slowed down 5-40x (two trainings at once, 2
    # trials each, took 108 s each with 2 threads), so this was one. Waiting passively, two
    # 2-thread fits at once take 15.3 s each (one thread each: 14.0 s), and a search alone
    # on large samples is faster (1000x: 2 trials on 500k sampled rows, 21.9 -> 13.4 s; the
    # demo's 26k rows: no faster, its rounds are too small to share). The thread count does
    # not change the trees (deterministic=True; tests/unit/test_training.py).
    num_threads: int = field(default_factory=bulk_threads)
    # Trials asked of the sampler at a time, each not seeing the others' scores: on data
    # too small for a fit to use two threads (the demo's 26k rows: a 2-thread search is no
    # faster), they are judged at once, one thread each (CONCURRENT_BELOW_ROWS). Part of
    # the spec, not the machine, so a spec gives the same model on any number of cores.
    trials_at_once: int = 2
    space: SearchSpace = field(default_factory=SearchSpace)


def spec_for(contract: DatasetContract, **overrides) -> TrainingSpec:
    """The spec every caller trains with: these defaults, the contract's trial budget and
    threshold rule, then the caller's overrides."""
    return TrainingSpec(**{"n_trials": contract.training.n_trials,
                           "threshold_rule": contract.training.threshold_rule, **overrides})


@dataclass
class TrainedModel:
    booster: lgb.Booster
    params: dict
    best_iteration: int
    threshold: float
    validation_metrics: dict
    trials: list[dict]
    seconds: float
    trained_on: dict = field(default_factory=lambda: {"where": "local"})
    judged_by: str = "the validation set"  # how trials, the threshold and the metrics were


def base_params(spec: TrainingSpec, y_train: np.ndarray) -> dict:
    params = {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "seed": spec.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": spec.num_threads,
        "verbose": -1,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
    }
    if spec.class_weight == "balanced":
        pos = float(y_train.mean())
        params["scale_pos_weight"] = (1 - pos) / max(pos, 1e-9)
    elif spec.class_weight != "none":
        raise ValueError(f"class_weight must be 'none' or 'balanced', got {spec.class_weight!r}")
    return params


def _fit(params, dtrain, dvalid, spec: TrainingSpec) -> lgb.Booster:
    import lightgbm as lgb

    return lgb.train(
        params,
        dtrain,
        num_boost_round=spec.max_rounds,
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)],
    )


def _score(booster: lgb.Booster, spec: TrainingSpec) -> float:
    best = booster.best_score["validation"][spec.objective_metric]
    return best if spec.objective_metric == "auc" else -best


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str) -> float:
    """The decision threshold from labelled predictions (validation, or the window a
    recalibrated version was fitted on) by a named rule: ``max_f1``; ``fixed:<p>``;
    ``min_recall:<r>`` (the highest threshold that keeps recall >= r); ``cost:<r>`` (a missed
    positive costs r false alarms: the threshold with the lowest total cost on these rows;
    for calibrated probabilities it sits near 1 / (1 + r))."""
    from sklearn.metrics import f1_score  # lazily: see evaluation.metrics

    if rule.startswith("fixed:"):
        return float(rule.split(":", 1)[1])
    grid = np.unique(np.round(np.quantile(p, np.linspace(0.01, 0.99, 197)), 6))
    if rule == "max_f1":
        scores = [f1_score(y, p >= t, zero_division=0) for t in grid]
        return float(grid[int(np.argmax(scores))])
    if rule.startswith("min_recall:"):
        target = float(rule.split(":", 1)[1])
        ok = [t for t in grid if (p[y == 1] >= t).mean() >= target]
        return float(max(ok)) if ok else float(grid[0])
    if rule.startswith("cost:"):
        ratio = float(rule.split(":", 1)[1])
        if not ratio > 0:
            raise ValueError(f"threshold rule {rule!r}: the cost ratio must be > 0")
        grid = np.union1d(grid, [1 / (1 + ratio)])
        pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
        missed = np.searchsorted(pos, grid, side="left")  # positives scored below t
        alarms = len(neg) - np.searchsorted(neg, grid, side="left")  # negatives at or above
        return float(grid[int(np.argmin(ratio * missed + alarms))])
    raise ValueError(f"unknown threshold rule {rule!r}: use max_f1, fixed:<p>, "
                     "min_recall:<r> or cost:<r>")


def _validation_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import f1_score, log_loss, roc_auc_score  # lazily: see evaluation

    return {
        "auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "f1_at_threshold": float(f1_score(y, p >= threshold, zero_division=0)),
    }


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    contract: DatasetContract,
    spec: TrainingSpec,
    log: Callable[[str], None] = print,
    full: FeatureRows | None = None,
    cluster: ClusterSpec | None = None,
    periods: np.ndarray | None = None,
) -> TrainedModel:
    """Search hyperparameters, refit the best, choose the threshold. Deterministic for the
    same data and spec (seeded sampler, deterministic LightGBM; the thread count does not
    change the model).

    ``full``: every training row, of which ``x_train`` is a deterministic sample (a training
    set larger than memory): the search runs on the sample, and the final fit (the best
    parameters, the best round count) on every row, streamed from the file into LightGBM's
    binned dataset a chunk at a time (bins from the sample), so the full matrix is never
    held. ``cluster``: the final fit runs on that Dask cluster with ``lightgbm.dask``
    instead (lib/training/dask_training.py), on every row. ``periods``: the period of each train
    then validation row, to stratify cross-validation folds by (module docstring)."""
    import lightgbm as lgb

    optuna = _optuna()
    if len(np.unique(y_train)) < 2 or len(np.unique(y_valid)) < 2:
        raise ValueError(
            "training needs both classes in train and validation; got "
            f"train positives {int(y_train.sum())}/{len(y_train)}, "
            f"validation positives {int(y_valid.sum())}/{len(y_valid)}"
        )
    started = time.perf_counter()
    cats = [i for i, name in enumerate(contract.features) if name in contract.categorical]
    dataset_args = {
        "feature_name": list(contract.features),
        "categorical_feature": cats,
        "free_raw_data": False,
        # Trials change min_child_samples; the binned dataset must not pre-filter for one.
        "params": {"feature_pre_filter": False},
    }
    n_all = len(y_train) + len(y_valid)
    cross_validated = full is None and cluster is None and n_all < CV_BELOW_ROWS
    base = base_params(spec, y_train)
    space = spec.space.for_rows(n_all)
    trials: list[dict] = []
    if cross_validated:
        x_all, y_all = np.vstack([x_train, x_valid]), np.concatenate([y_train, y_valid])
        folds = _folds(y_all, periods, spec.seed)
        judged_by = (f"{len(folds)}-fold cross-validation over the {n_all} train + validation "
                     f"rows (stratified by label{' and period' if periods is not None else ''}"
                     "; threshold and metrics from out-of-fold predictions)")

        def judge_with():  # each thread judging a trial has a binned dataset of its own
            dall = lgb.Dataset(x_all, y_all, **dataset_args)

            def judge(params: dict) -> tuple[float, int]:
                curves = lgb.cv(params, dall, num_boost_round=spec.max_rounds, folds=folds,
                                callbacks=[lgb.early_stopping(spec.early_stopping_rounds,
                                                              verbose=False)])
                best = curves[f"valid {spec.objective_metric}-mean"][-1]
                rounds = len(curves[f"valid {spec.objective_metric}-mean"])
                return (best if spec.objective_metric == "auc" else -best), rounds
            return judge, (dall,)
    else:
        judged_by = f"the validation set ({len(y_valid)} rows)"

        def judge_with():
            dtrain = lgb.Dataset(x_train, y_train, **dataset_args)
            dvalid = lgb.Dataset(x_valid, y_valid, reference=dtrain, **dataset_args)

            def judge(params: dict) -> tuple[float, int]:
                booster = _fit(params, dtrain, dvalid, spec)
                return _score(booster, spec), booster.best_iteration
            return judge, (dtrain, dvalid)

    def trial_params(trial: optuna.Trial) -> dict:
        params = base | {
            "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
            "num_leaves": trial.suggest_int("num_leaves", *space.num_leaves, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", *space.min_child_samples,
                                                   log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", *space.feature_fraction),
            "lambda_l2": trial.suggest_float("lambda_l2", *space.lambda_l2, log=True),
        }
        if len(space.extra_trees) > 1:  # the same trials as ever where it is no choice
            params["extra_trees"] = trial.suggest_categorical("extra_trees", space.extra_trees)
        return params

    def told(trial: optuna.Trial, score: float, rounds: int) -> None:
        trials.append({"trial": trial.number, "score": score, "rounds": rounds,
                       **trial.params})
        best = max(t["score"] for t in trials)
        log(f"trial {trial.number + 1}/{spec.n_trials}: {spec.objective_metric} "
            f"{abs(score):.4f} at {rounds} rounds (best so far {abs(best):.4f}); params "
            f"{_rounded(trial.params)}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.seed)
    )
    firsts = ([_within(first, space) for first in FIRST_TRIALS]
              + [_within(first, space) for first in EXACT_TRIALS if _holds(space, first)])
    for first in firsts[:spec.n_trials]:
        study.enqueue_trial(first)
    judge, data = judge_with()
    _search(study, trial_params, told, judge, judge_with, spec,
            concurrent=n_all < CONCURRENT_BELOW_ROWS)
    log(f"trials judged on {judged_by}")
    params = base | study.best_params
    if cross_validated:
        return _refit_cross_validated(params, data[0], x_all, y_all, folds, spec, trials,
                                      judged_by, started, log)
    dtrain, dvalid = data
    booster = _fit(params, dtrain, dvalid, spec)
    best_iteration = int(booster.best_iteration)
    trained_on = {"where": "local"}
    if full is not None or cluster is not None:
        n_rows = len(y_train) if full is None else len(full)
        log(f"final fit on {n_rows} rows, {best_iteration} rounds "
            f"({cluster.describe() if cluster else STREAMED}; the search ran on "
            f"{len(y_train)} rows)")
        if cluster is not None:  # from the file, each worker reads its own share of it
            x, y = (x_train, y_train) if full is None else (full, None)
            booster, workers = dask_training.fit_on(cluster, x, y, params, best_iteration,
                                                    list(contract.features), cats)
            trained_on = {"where": cluster.describe(), "workers": workers}
        else:
            rows = lgb.Dataset(full.lightgbm_sequence(n_rows), full.labels(), reference=dtrain,
                               **{**dataset_args, "free_raw_data": True})
            # Column-wise histograms: row-wise ones keep a second, row-major copy of every
            # row's bins (+550 MB at 29M rows); the trees are the same either way, and on
            # any number of threads (deterministic; tests/unit/test_training.py).
            booster = lgb.train(params | {"force_row_wise": False, "force_col_wise": True},
                                rows, num_boost_round=best_iteration)
            trained_on = {"where": STREAMED}
        trained_on |= {"search_rows": len(y_train), "train_rows": n_rows,
                       "rounds": best_iteration}
    booster.free_dataset()  # the trees are all it needs now (a streamed fit's Dataset: GBs)
    return _finished(booster, params, best_iteration, y_valid,
                     booster.predict(x_valid, num_iteration=best_iteration), spec, trials,
                     started, trained_on, judged_by, "validation", log)


def _optuna():
    """Optuna, imported the first time on a thread of its own. Optuna keeps the exception of
    each optional import it cannot make, traceback and all (``optuna._imports.try_import``),
    so every frame on the stack that first imports it stays alive for good, with its
    locals: imported inside ``train``, the step's frames kept the streamed fit's dataset and
    the search's samples (1000x: 0.9 GB) alive under the next step's peak. A new thread's
    stack holds nothing of ours (tests/unit/test_training.py)."""
    def load() -> None:
        with contextlib.suppress(Exception):  # an import that fails fails again below
            importlib.import_module("optuna")

    if "optuna" not in sys.modules:
        loader = threading.Thread(target=load, name="import-optuna")
        loader.start()
        loader.join()
    import optuna  # imported now; if it failed on the thread, it fails here, naming why

    return optuna


def _search(study: optuna.Study, trial_params: Callable[[optuna.Trial], dict],
            told: Callable, judge: Callable, judge_with: Callable, spec: TrainingSpec,
            concurrent: bool) -> None:
    """``spec.n_trials`` trials, asked of the study ``spec.trials_at_once`` at a time and told
    in the order asked, so the trials (and the model) depend on the spec alone, not on how
    many run at once. ``concurrent``: a round's trials are judged at once, on threads with
    a binned dataset each (``judge_with``) and the spec's threads shared among them (LightGBM
    releases the GIL while it fits), else one after the other on all of them."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    per_round = max(1, spec.trials_at_once)
    at_once = min(per_round, max(1, spec.num_threads)) if concurrent else 1
    free = queue.SimpleQueue()  # the judges (and their datasets) no thread is using
    for one in [judge] + [judge_with()[0] for _ in range(at_once - 1)]:
        free.put(one)

    def judged(params: dict) -> tuple[float, int]:
        mine = free.get()
        try:
            return mine(params)
        finally:
            free.put(mine)

    threads = {"num_threads": max(1, spec.num_threads // at_once)} if at_once > 1 else {}
    started = time.perf_counter()
    # One at a time, in this thread: a run stopped meanwhile stops at the fit's next round,
    # not after a pool's thread has finished the trial.
    with ThreadPoolExecutor(at_once) if at_once > 1 else contextlib.nullcontext() as pool:
        asked = 0
        while asked < spec.n_trials and (spec.timeout_s is None
                                         or time.perf_counter() - started < spec.timeout_s):
            batch = [study.ask() for _ in range(min(per_round, spec.n_trials - asked))]
            asked += len(batch)
            params = [trial_params(trial) | threads for trial in batch]
            results = list(pool.map(judged, params)) if pool else [judge(p) for p in params]
            for trial, (score, rounds) in zip(batch, results, strict=True):
                study.tell(trial, score)
                told(trial, score, rounds)


def _finished(booster: lgb.Booster, params: dict, rounds: int, y: np.ndarray,
              p: np.ndarray, spec: TrainingSpec, trials: list[dict], started: float,
              trained_on: dict, judged_by: str, judged_on: str,
              log: Callable[[str], None]) -> TrainedModel:
    """The threshold and the metrics from the judged predictions ``p`` of labels ``y``
    (validation, or out of fold), said in the log, and the trained model."""
    threshold = choose_threshold(y, p, spec.threshold_rule)
    metrics = _validation_metrics(y, p, threshold)
    chosen = _rounded({k: params[k] for k in trials[0] if k in params})
    log(f"best of {len(trials)} trials: {chosen}; {judged_on} {_rounded(metrics)}; {rounds} "
        f"rounds; threshold {threshold:.4f} ({spec.threshold_rule})")
    return TrainedModel(
        booster=booster,
        params={k: (float(v) if isinstance(v, float) else v) for k, v in params.items()},
        best_iteration=rounds,
        threshold=threshold,
        validation_metrics=metrics,
        trials=trials,
        seconds=time.perf_counter() - started,
        trained_on=trained_on,
        judged_by=judged_by,
    )


def _rounded(values: dict) -> dict:
    """Parameters and metrics as a person reads them: 4 significant digits."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}


def _within(params: dict, space: SearchSpace) -> dict:
    """``params`` clipped into ``space`` (whole numbers stay whole; a choice the space does
    not offer becomes its first), with the space's first choice where ``params`` name none
    and it has more than one."""
    out = {}
    for name in SearchSpace.__dataclass_fields__:
        bounds = getattr(space, name)
        if name not in params:
            if isinstance(bounds[0], bool) and len(bounds) > 1:
                out[name] = bounds[0]
            continue
        value = params[name]
        if isinstance(bounds[0], bool):
            out[name] = value if value in bounds else bounds[0]
        else:
            lo, hi = bounds
            out[name] = type(lo)(min(max(value, lo), hi))
    return out


def _holds(space: SearchSpace, params: dict) -> bool:
    """Whether ``space`` holds ``params`` as they are (unclipped)."""
    return _within(params, space).items() >= params.items()


def _folds(y: np.ndarray, periods: np.ndarray | None, seed: int) -> list:
    """Stratified folds over ``y``, by label and period where every such stratum has a row
    for each fold (else by label alone); fewer folds when a class is rarer than CV_FOLDS."""
    from sklearn.model_selection import StratifiedKFold

    k = int(min(CV_FOLDS, np.bincount(y.astype(int)).min()))
    if k < 2:
        raise ValueError(f"cross-validation needs >= 2 rows of each class; got "
                         f"{np.bincount(y.astype(int)).tolist()}")
    strata = y.astype(int).astype(str)
    if periods is not None:
        by_period = pd.Series(periods).astype(str).to_numpy() + "|" + strata
        if pd.Series(by_period).value_counts().min() >= k:
            strata = by_period
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), strata))


def _refit_cross_validated(params: dict, dall, x: np.ndarray, y: np.ndarray, folds: list,
                           spec: TrainingSpec, trials: list[dict], judged_by: str,
                           started: float, log: Callable[[str], None]) -> TrainedModel:
    """The chosen parameters once more across the folds (their out-of-fold predictions give
    the threshold and the metrics), then one fit on every row with the folds' rounds."""
    import lightgbm as lgb

    curves = lgb.cv(params, dall, num_boost_round=spec.max_rounds, folds=folds,
                    callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)],
                    return_cvbooster=True)
    rounds = len(curves[f"valid {spec.objective_metric}-mean"])
    out_of_fold = np.empty(len(y))
    for booster, (_, held_out) in zip(curves["cvbooster"].boosters, folds, strict=True):
        out_of_fold[held_out] = booster.predict(x[held_out], num_iteration=rounds)
    booster = lgb.train(params, dall, num_boost_round=rounds)
    booster.free_dataset()
    return _finished(booster, params, rounds, y, out_of_fold, spec, trials, started,
                     {"where": "local"}, judged_by, "out-of-fold", log)
