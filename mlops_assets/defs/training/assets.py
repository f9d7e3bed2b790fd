"""Training and evaluation: a tuned LightGBM saved as a new version in the BentoML store,
then judged on the sealed test rows."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD, TARGET, DatasetContract
from mlops_assets.defs.metadata import markdown_table, report_link
from mlops_assets.defs.resources import ProjectResource, TrainingClusterResource
from mlops_assets.lib import evaluation, io
from mlops_assets.lib.dataset import features
from mlops_assets.lib.dataset.rows import FeatureRows
from mlops_assets.lib.governance.registry import provenance
from mlops_assets.lib.monitoring import drift
from mlops_assets.lib.monitoring.retraining import LossPolicy
from mlops_assets.lib.training import calibration, search

_SPEC = search.TrainingSpec()


class TrainingConfig(dg.Config):
    """Hyperparameter search and training settings: lib/training/search.py's TrainingSpec, whose
    defaults these are, editable in the launchpad."""

    n_trials: int | None = None  # None: the contract's training.n_trials
    timeout_s: float | None = _SPEC.timeout_s
    seed: int = _SPEC.seed
    max_rounds: int = _SPEC.max_rounds
    early_stopping_rounds: int = _SPEC.early_stopping_rounds
    objective_metric: str = _SPEC.objective_metric
    class_weight: str = _SPEC.class_weight
    threshold_rule: str | None = None  # None: the contract's training.threshold_rule
    reference_rows: int = 20_000  # drift reference kept with the model (deterministic sample)
    recent_periods: int | None = None  # train on the latest N periods only; None: all data
    # Above in_memory_rows training rows, the search runs on deterministic samples of
    # search_rows training and validation rows, and the final fit on every training row,
    # streamed from the features file (lib/dataset/rows.py FeatureRows): the matrix is never
    # held.
    in_memory_rows: int = 2_000_000
    search_rows: int = 500_000
    # A training set of at least this many rows has its final fit on the Dask cluster
    # (TrainingClusterResource) with lightgbm.dask; None (default): never. 0: always. On one
    # machine a LocalCluster holds the rows twice (measured at 100x: +3.3 GB vs +1.8 GB).
    distributed_min_rows: int | None = None
    # The `recalibrate` job: no training; the champion's base model gets a calibrator refit on
    # the latest labelled (train + validation) rows, as a new version that goes through the
    # same evaluation and gate.
    recalibrate: bool = False
    calibration_rows: int = LossPolicy().calibration_rows
    calibration_method: str = "platt"  # or "isotonic"
    learning_rate: list[float] = list(search.SearchSpace.learning_rate)
    num_leaves: list[int] = list(search.SearchSpace.num_leaves)
    min_child_samples: list[int] = list(search.SearchSpace.min_child_samples)
    feature_fraction: list[float] = list(search.SearchSpace.feature_fraction)
    lambda_l2: list[float] = list(search.SearchSpace.lambda_l2)

    def spec(self, contract: DatasetContract) -> search.TrainingSpec:
        space = search.SearchSpace(
            learning_rate=tuple(self.learning_rate), num_leaves=tuple(self.num_leaves),
            min_child_samples=tuple(self.min_child_samples),
            feature_fraction=tuple(self.feature_fraction), lambda_l2=tuple(self.lambda_l2),
        )
        return search.spec_for(
            contract, timeout_s=self.timeout_s, seed=self.seed, max_rounds=self.max_rounds,
            early_stopping_rounds=self.early_stopping_rounds,
            objective_metric=self.objective_metric, class_weight=self.class_weight, space=space,
            **({"n_trials": self.n_trials} if self.n_trials else {}),
            **({"threshold_rule": self.threshold_rule} if self.threshold_rule else {}),
        )


def _lineage(instance: dg.DagsterInstance, features_file: Path) -> tuple[str, list[dict]]:
    """The dataset build a features file was written by (stored under its run id) and the
    batch versions that build read (its train_set's ``batch_versions``): what the model was
    trained on, pinned, not whatever is latest now. The retention rule keeps these files."""
    run_id = features_file.stem
    for record in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        mat = record.event_log_entry.asset_materialization
        if mat.asset_key.to_user_string() == "train_set" and "batch_versions" in mat.metadata:
            return run_id, list(mat.metadata["batch_versions"].value)
    return run_id, []


@dg.asset(group_name="training", kinds={"lightgbm", "optuna", "bentoml"})
def candidate_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    train_features: Path,
    validation_features: Path,
    project: ProjectResource,
    training_cluster: TrainingClusterResource,
) -> dg.Output[dict]:
    """A LightGBM model tuned with Optuna, saved as a new version in the BentoML model store
    (or, in the `recalibrate` job, the champion's model recalibrated on the latest rows)."""
    contract = project.contract()
    spec = config.spec(contract)
    train_rows, validation_rows = (FeatureRows(p, contract)
                                   for p in (train_features, validation_features))
    if config.recalibrate:  # on the latest periods' rows only
        window = calibration.latest_periods(
            train_rows.period_counts().add(validation_rows.period_counts(), fill_value=0),
            config.calibration_rows)
        return _recalibrated(context, config, spec, pd.concat(
            [train_rows.only(window).frame(), validation_rows.only(window).frame()]), project)
    dataset_run, batch_versions = _lineage(context.instance, train_features)
    periods = train_rows.period_values()
    if config.recent_periods:
        periods = periods[-config.recent_periods:]
        train_rows, validation_rows = train_rows.only(periods), validation_rows.only(periods)
        context.log.info(f"training window: the latest {config.recent_periods} periods "
                         f"{periods}")
    n_train = len(train_rows)
    cluster = None
    if config.distributed_min_rows is not None and n_train >= config.distributed_min_rows:
        cluster = training_cluster.spec()
    if n_train > config.in_memory_rows:  # the search on samples, the final fit on every row
        searched, valid = (r.sample(config.search_rows, spec.seed)
                           for r in (train_rows, validation_rows))
        full = train_rows
    else:
        searched, valid, full = train_rows.frame(), validation_rows.frame(), None
    trained = search.train(
        features.to_matrix(searched, contract), searched[TARGET].to_numpy(),
        features.to_matrix(valid, contract), valid[TARGET].to_numpy(), contract, spec,
        log=context.log.info, full=full, cluster=cluster,
        periods=np.concatenate([searched[PERIOD].astype(str).to_numpy(),
                                valid[PERIOD].astype(str).to_numpy()]),
    )
    validation_labels = validation_rows.labels()
    info = {
        "dataset": contract.name,
        "params": trained.params,
        "best_iteration": trained.best_iteration,
        "threshold": trained.threshold,
        "threshold_rule": spec.threshold_rule,
        "features": contract.features,
        "categorical": {k: v.categories for k, v in contract.categorical.items()},
        "validation_metrics": trained.validation_metrics,
        "validation_positive_rate": float(validation_labels.mean()),
        "train_rows": n_train,
        "validation_rows": len(validation_labels),
        "trained_on": trained.trained_on,
        "data_versions": {v["batch"]: v["data_version"] for v in batch_versions
                          if v["batch"] in set(periods)},
        "dataset_run_id": dataset_run,
        "batch_versions": batch_versions,
        "search": {"trials": len(trained.trials), "seed": spec.seed,
                   "objective": spec.objective_metric, "seconds": round(trained.seconds, 2),
                   "judged_by": trained.judged_by},
        "dagster_run_id": context.run.run_id,
        **provenance(),
    }
    # From the rows the search saw: every training row, or past memory a uniform sample of
    # them (a sample of it is a sample of the training rows, without another pass over them).
    reference = drift.sample(searched[contract.features], config.reference_rows,
                             seed=spec.seed).copy()
    reference[drift.PREDICTION] = trained.booster.predict(
        features.to_matrix(reference, contract), num_iteration=trained.best_iteration
    )
    tag = project.registry().save(
        contract, trained.booster, trained.threshold, trained.best_iteration, info, reference
    )
    trials = pd.DataFrame(trained.trials).round(4)
    return dg.Output(
        {"tag": tag, **info},
        metadata={
            "bentoml_tag": tag,
            "model_path": dg.MetadataValue.path(str(project.registry().get(tag).path)),
            "threshold": round(trained.threshold, 4),
            "validation_auc": round(trained.validation_metrics["auc"], 4),
            "validation_log_loss": round(trained.validation_metrics["log_loss"], 4),
            "best_iteration": trained.best_iteration,
            "trials": markdown_table(trials),
            "training_seconds": round(trained.seconds, 2),
            "judged_by": trained.judged_by,
            "trained_on": trained.trained_on["where"] + "".join(
                f", {k.replace('_', ' ')} {v}" for k, v in trained.trained_on.items()
                if k != "where"),
            "batches": ", ".join(info["data_versions"]),
        },
    )


def _recalibrated(context: dg.AssetExecutionContext, config: TrainingConfig,
                  spec: search.TrainingSpec, labelled: pd.DataFrame,
                  project: ProjectResource) -> dg.Output[dict]:
    """The champion's base model (a recalibrated champion is recalibrated again from its base,
    never stacked) with a calibrator fitted on the latest labelled rows and the threshold
    re-derived there by the contract's rule."""
    registry = project.registry()
    champion = registry.champion()
    if champion is None:
        raise ValueError("recalibrate: there is no champion to recalibrate yet; train one "
                         "first (the train_and_promote job, or `make demo`)")
    base = registry.get(champion).info.metadata.get("recalibrated_from") or champion
    model = registry.load(base)
    window = calibration.latest_rows(labelled, config.calibration_rows)
    periods = sorted(window[PERIOD].unique())
    y = window[TARGET].to_numpy(int)
    raw = model.predict_matrix(features.to_matrix(window, model.contract))
    cal = calibration.fit(raw, y, config.calibration_method,
                          fitted_on=f"periods {periods[0]}..{periods[-1]}")
    p = cal.apply(raw)
    threshold = search.choose_threshold(y, p, spec.threshold_rule)
    before = evaluation.metrics(y, raw, model.threshold)
    after = evaluation.metrics(y, p, threshold)
    info = {
        **registry.get(base).info.metadata,
        "threshold": threshold, "threshold_rule": spec.threshold_rule,
        "calibration_periods": periods, "calibration_rows": len(y),
        "calibration_window_log_loss": {"base": before["log_loss"],
                                        "recalibrated": after["log_loss"]},
        "dagster_run_id": context.run.run_id, **provenance(),
    }
    tag = registry.save_recalibrated(base, cal, threshold, info)
    saved = registry.get(tag)
    context.log.info(f"{tag}: {base} recalibrated ({cal.method}) on {len(y)} rows of "
                     f"{periods}: log loss {before['log_loss']:.4f} -> {after['log_loss']:.4f} "
                     f"there; threshold {threshold:.4f} ({spec.threshold_rule})")
    return dg.Output({"tag": tag, **saved.info.metadata}, metadata={
        "bentoml_tag": tag,
        "recalibrated_from": base,
        "model_path": dg.MetadataValue.path(str(saved.path)),
        "threshold": round(threshold, 4),
        "calibration": f"{cal.method} {cal.params}" if cal.method == "platt" else cal.method,
        "calibration_rows": len(y),
        "calibration_periods": ", ".join(periods),
        "window_log_loss_base": round(before["log_loss"], 4),
        "window_log_loss_recalibrated": round(after["log_loss"], 4),
        "window_calibration_gap_base": round(before["mean_prediction"] - before["positive_rate"],
                                             4),
    })


class EvaluationConfig(dg.Config):
    """Above ``sample_rows`` sealed test rows, the bootstrap CI and the Evidently report run
    on a deterministic sample of that many (seed 0); the metrics, calibration and slices
    always use every row. The metadata says which."""

    sample_rows: int = 200_000


@dg.asset(group_name="evaluation", kinds={"evidently", "html"})
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    candidate_model: dict,
    test_features: Path,
    project: ProjectResource,
) -> dg.Output[dict]:
    """The candidate's metrics on the sealed test rows: CI, calibration, slices, HTML report."""
    tag = candidate_model["tag"]
    test_features = FeatureRows(test_features, project.contract()).frame()
    model = project.registry().load(tag)
    y = test_features[TARGET].to_numpy().astype(int)
    p = model.predict_frame(test_features)
    m = evaluation.metrics(y, p, model.threshold)
    sample = io.sample_positions(len(y), config.sample_rows)
    sampled = None if len(sample) == len(y) else (
        f"bootstrap CI and Evidently report on a deterministic sample of {len(sample):,} of "
        f"{len(y):,} test rows (seed 0); metrics, calibration and slices on all rows")
    ci = evaluation.bootstrap_auc_ci(y[sample], p[sample])
    calibration = evaluation.calibration_table(y, p)
    slices = evaluation.slice_metrics(test_features, y, p, model.contract, model.threshold)
    gap, where = evaluation.max_slice_gap(slices, m["roc_auc"])
    out_dir = project.paths.reports / "evaluation" / tag.replace(":", "-")
    snapshot = evaluation.classification_snapshot(
        test_features.iloc[sample], y[sample], p[sample], model.contract, model.threshold,
        tags=["evaluation", f"model:{tag}"], name=f"{tag} on the sealed test rows")
    published = project.report_store().publish(snapshot, model.contract.name,
                                                out_dir / "classification.html")
    html = published.path
    result = {
        "tag": tag, "threshold": model.threshold, "metrics": m, "roc_auc_ci95": list(ci),
        "calibration": calibration.to_dict("records"), "slices": slices.to_dict("records"),
        "max_slice_gap": gap, "max_slice_gap_at": where,
        "periods": sorted(test_features[PERIOD].unique()), "report": str(html),
        "sampled": sampled,
    }
    io.write_json(out_dir / "evaluation.json", result)
    context.log.info(f"{tag}: test AUC {m['roc_auc']:.4f} (95% CI {ci[0]:.4f}..{ci[1]:.4f})")
    return dg.Output(
        result,
        metadata={
            "bentoml_tag": tag,
            **{k: round(float(v), 4) for k, v in m.items() if k != "rows"},
            "test_rows": m["rows"],
            "sampled": sampled or "no: every test row",
            "roc_auc_ci95_low": round(ci[0], 4),
            "roc_auc_ci95_high": round(ci[1], 4),
            "threshold": round(model.threshold, 4),
            "max_slice_gap": round(gap, 4),
            "calibration": markdown_table(calibration),
            "slices": markdown_table(slices.round(4)),
            **report_link(published),
        },
    )


@dg.asset(group_name="evaluation", kinds={"markdown"})
def model_card(
    candidate_model: dict, model_evaluation: dict, project: ProjectResource
) -> dg.MaterializeResult:
    """The model card (Markdown) of the candidate version: use, data, metrics, limits."""
    from mlops_assets.lib.governance.cards import model_card as render

    text = render(candidate_model, model_evaluation, project.contract())
    path = project.paths.reports / "model_cards" / f"{candidate_model['tag'].replace(':', '-')}.md"
    io.write_text(path, text)
    return dg.MaterializeResult(
        metadata={"card": dg.MetadataValue.md(text), "bentoml_tag": candidate_model["tag"],
                  "path": dg.MetadataValue.path(str(path))}
    )
