"""The model card: what a reviewer needs to decide whether this version may serve."""

from __future__ import annotations

import pandas as pd

from mlops_assets.config import DatasetContract


def _table(records: list[dict], columns: list[str]) -> str:
    """A Markdown table, numbers to 4 places; a value that does not exist (the AUC of a slice
    whose rows are all of one class) as "-", not "nan"."""
    frame = pd.DataFrame(records)[columns].round(4).astype(object)
    return frame.where(frame.notna(), "-").to_markdown(index=False)


def _metrics_table(m: dict, lo: float, hi: float) -> str:
    rows = [
        ("ROC AUC", f"{m['roc_auc']:.4f} (95% bootstrap CI {lo:.4f} to {hi:.4f})"),
        ("PR AUC", f"{m['pr_auc']:.4f}"),
        ("log loss", f"{m['log_loss']:.4f}"),
        ("Brier", f"{m['brier']:.4f}"),
        *((f"{k} at threshold", f"{m[k]:.4f}")
          for k in ("accuracy", "precision", "recall", "f1", "false_positive_rate")),
        ("positive rate observed / mean predicted",
         f"{m['positive_rate']:.4f} / {m['mean_prediction']:.4f}"),
    ]
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def _threshold_rows(model: dict) -> str:
    if model.get("recalibrated_from"):
        return f"the {model['calibration_rows']} recalibration rows"
    return "validation rows"


def _recalibration(model: dict) -> str:
    """A recalibrated version: its base model and the calibrator, in a paragraph."""
    if not model.get("recalibrated_from"):
        return ""
    cal = model["calibration"]
    window = model.get("calibration_window_log_loss", {})
    return (f"\n**Recalibrated** from `{model['recalibrated_from']}` (same trees, same ranking): "
            f"a {cal['method']} calibrator fitted on {cal['rows']} labelled rows of "
            f"{cal['fitted_on']} (observed positive rate {cal['positive_rate']:.3f}); log loss "
            f"there {window.get('base', float('nan')):.4f} -> "
            f"{window.get('recalibrated', float('nan')):.4f}. The training facts below are "
            "the base model's.\n")


def _scale_notes(model: dict, evaluation: dict) -> str:
    """Where a large training set was fitted, and what ran on samples (empty otherwise)."""
    notes = []
    where = model.get("trained_on") or {"where": "local"}
    if where.get("workers"):
        notes.append(f"Final fit on a Dask cluster ({where['where']}, {where['workers']} "
                     f"workers, lightgbm.dask, {where['rounds']} rounds); the hyperparameter "
                     f"search ran on {where['search_rows']} sampled training rows.")
    elif where["where"] != "local":
        notes.append(f"Final fit {where['where']} ({where['train_rows']} rows, "
                     f"{where['rounds']} rounds); the hyperparameter search ran on "
                     f"{where['search_rows']} sampled training rows.")
    if evaluation.get("sampled"):
        notes.append(evaluation["sampled"][0].upper() + evaluation["sampled"][1:] + ".")
    return "".join(f"\n{n}" for n in notes)


def _training(model: dict) -> str:
    """How the model was chosen and its hyperparameters, rounded as a person reads them."""
    search = model.get("search", {})
    judged = search.get("judged_by", "the validation set")
    tuned = {k: v for k, v in model["params"].items()
             if k not in ("objective", "metric", "verbose", "deterministic", "num_threads")}
    rows = [{"hyperparameter": k, "value": f"{v:.4g}" if isinstance(v, float) else str(v)}
            for k, v in tuned.items()]
    return (f"{search.get('trials', '?')} trials (seed {search.get('seed', '?')}, objective "
            f"{search.get('objective', '?')}, LightGBM's defaults first), judged on {judged}; "
            f"{model['best_iteration']} boosting rounds.\n\n"
            + pd.DataFrame(rows).to_markdown(index=False))


def model_card(model: dict, evaluation: dict, contract: DatasetContract) -> str:
    m = evaluation["metrics"]
    lo, hi = evaluation["roc_auc_ci95"]
    batches = "\n".join(
        f"| {b} | `{(v or 'unknown')[:16]}` |" for b, v in model["data_versions"].items()
    )
    return f"""# Model card: `{model['tag']}`

## Intended use
Scores how likely a record of *{contract.title}* is positive for `{contract.target.column}`
(positive = {', '.join(map(repr, contract.target.positive))}), to rank and select records.
The decision threshold is {model['threshold']:.4f} (rule `{model['threshold_rule']}`,
chosen on {_threshold_rows(model)}). Not for decisions about individuals without human review.
{_recalibration(model)}
## Data
Trained on {model['train_rows']} rows, early-stopped on {model['validation_rows']} validation
rows; evaluated on {m['rows']} sealed test rows (never seen by training or tuning), periods
{evaluation['periods'][0]} to {evaluation['periods'][-1]}.{_scale_notes(model, evaluation)}
Dropped for leakage: {', '.join(contract.drop_columns) or 'none'}. Batches and their content
hashes:

| batch | data version |
|---|---|
{batches}

## Metrics on the sealed test set
{_metrics_table(m, lo, hi)}

## Slices
The largest shortfall of a slice's AUC below the overall {m['roc_auc']:.4f} that the slice's
sampling error cannot explain (overall - (slice AUC + 1.96 standard errors); 0 when every
slice is within its error): {evaluation['max_slice_gap']:.4f}, at
{evaluation['max_slice_gap_at']}. A slice whose rows are all of one class has no AUC ("-").

{_table(evaluation['slices'], ['slice', 'value', 'rows', 'positives', 'roc_auc', 'f1'])}

## Calibration
{_table(evaluation['calibration'], ['range', 'rows', 'mean_predicted', 'observed_rate'])}

## Promotion gate (from the contract, unless overridden at launch)
Minimum sealed-test AUC {contract.gate.min_auc}; against the champion on the same recent
sealed test rows (at least {contract.gate.min_comparison_rows}), AUC no worse than
{contract.gate.auc_margin} and log loss no worse than {contract.gate.log_loss_margin} (95%
paired bootstrap bounds); largest slice AUC gap at most {contract.gate.max_slice_gap}.

## Known limitations
- The base rate and the inputs may drift over time; the probabilities are calibrated to the
  training periods, so recalibrate or retrain when the monitored positive rate moves (the
  monitoring's calibration gap says when).
- Slices with fewer than 100 rows or 10 rows of a class are reported but not judged.

## Training
{_training(model)}

## Lineage
- Code: git commit `{model.get('git_commit') or 'unknown'}`; libraries
  {model['libraries']}.
- Dagster run `{model['dagster_run_id']}`.
"""
