"""Validation (row by row, with a quarantine) and the sealed train/validation/test split."""


import dagster as dg
import pandas as pd

from mlops_assets.config import BATCH, ROW_KEY, SPLIT, SPLITS
from mlops_assets.defs.metadata import frame_metadata, markdown_table
from mlops_assets.defs.resources import ProjectResource, batches
from mlops_assets.lib import data, split

# --- validation, one batch at a time --------------------------------------------------------


@dg.multi_asset(
    partitions_def=batches,
    group_name="validation",
    outs={
        "validated_batch": dg.AssetOut(
            description="The batch's valid rows, typed by the contract, with stable row keys.",
            kinds={"pandas", "pandera"},
        ),
        "quarantined_rows": dg.AssetOut(
            description="The batch's invalid rows, each with every reason it was rejected.",
            kinds={"pandas", "pandera"},
        ),
    },
)
def validate_batch(
    context: dg.AssetExecutionContext, raw_batch: pd.DataFrame, project: ProjectResource
):
    """Type each row by the contract and quarantine the rows that break it, with reasons."""
    contract = project.contract()
    parsed = data.parse_batch(raw_batch, contract, context.partition_key)
    result = data.validate_rows(parsed, contract)
    reasons = result.reasons_by_column()
    yield dg.Output(
        result.valid,
        output_name="validated_batch",
        metadata={
            **frame_metadata(result.valid),
            "invalid_fraction": round(result.invalid_fraction, 6),
            "quarantined": len(result.quarantined),
        },
    )
    yield dg.Output(
        result.quarantined,
        output_name="quarantined_rows",
        metadata={
            **frame_metadata(result.quarantined),
            "reasons_by_column": markdown_table(reasons) if len(reasons) else "none",
            "rows": markdown_table(result.quarantined[[ROW_KEY, "reason"]], max_rows=100)
            if len(result.quarantined)
            else "none",
        },
    )


@dg.asset_check(
    asset="validated_batch",
    blocking=True,
    partitions_def=batches,
    additional_ins={"quarantined_rows": dg.AssetIn()},
)
def invalid_fraction_below_limit(
    validated_batch: pd.DataFrame, quarantined_rows: pd.DataFrame, project: ProjectResource
) -> dg.AssetCheckResult:
    """No more than the contract's ``max_invalid_fraction`` of the batch is quarantined."""
    limit = project.contract().max_invalid_fraction
    total = len(validated_batch) + len(quarantined_rows)
    fraction = len(quarantined_rows) / total if total else 1.0
    return dg.AssetCheckResult(
        passed=total > 0 and fraction <= limit,
        metadata={
            "invalid_fraction": round(fraction, 6),
            "limit": limit,
            "quarantined": len(quarantined_rows),
            "rows": total,
            "first_reasons": markdown_table(quarantined_rows[[ROW_KEY, "reason"]], 20)
            if len(quarantined_rows)
            else "none",
        },
        description=f"{fraction:.2%} of {total} rows invalid (limit {limit:.2%})",
    )


# --- the sealed split over every batch -------------------------------------------------------

# Re-split when any batch was newly validated; a rejected batch (no validated partition) must
# not hold the others back, so "all deps present" is dropped from the eager condition.
_AFTER_INGESTION = dg.AutomationCondition.eager().without(
    ~dg.AutomationCondition.any_deps_missing()
)


@dg.multi_asset(
    group_name="dataset",
    outs={
        s: dg.AssetOut(description=d, kinds={"pandas"}, automation_condition=_AFTER_INGESTION)
        for s, d in [
            ("train_set", "Rows sealed to training, from every valid batch."),
            ("validation_set", "Rows sealed to validation (early stopping, thresholds)."),
            ("test_set", "The sealed test rows: read only by evaluation and the gate."),
        ]
    },
    ins={"validated_batch": dg.AssetIn()},
)
def sealed_split(
    context: dg.AssetExecutionContext,
    validated_batch: dict[str, pd.DataFrame],
    project: ProjectResource,
):
    """Assign every valid row to train/validation/test by a hash of its row key, and record
    the test row keys in the append-only sealed manifest."""
    contract = project.contract()
    rows = pd.concat(validated_batch.values(), ignore_index=True) if validated_batch else None
    if rows is None or rows.empty:
        raise ValueError("no validated batch is stored yet: land and ingest a batch first")
    assigned = split.with_split(rows, contract)
    manifest = split.seal_test_keys(project.paths.sealed_test, assigned)
    included = sorted(validated_batch)
    for name in SPLITS:
        part = assigned[assigned[SPLIT] == name].reset_index(drop=True)
        yield dg.Output(
            part,
            output_name=f"{name}_set",
            metadata={
                **frame_metadata(part),
                "batches": ", ".join(included),
                "positive_rate": round(float(part["_target"].mean()), 4) if len(part) else 0.0,
                "sealed_test_keys": manifest.total,
            },
        )
    context.log.info(f"split {len(assigned)} rows from {len(included)} batches")


@dg.asset_check(
    asset="test_set",
    blocking=True,
    additional_ins={"train_set": dg.AssetIn(), "validation_set": dg.AssetIn()},
)
def test_set_is_sealed(
    test_set: pd.DataFrame,
    train_set: pd.DataFrame,
    validation_set: pd.DataFrame,
    project: ProjectResource,
) -> dg.AssetCheckResult:
    """Train, validation and test are disjoint, and every row ever sealed to test still is."""
    report = split.audit(
        project.paths.sealed_test,
        train=train_set[ROW_KEY],
        validation=validation_set[ROW_KEY],
        test=test_set[ROW_KEY],
        batches_present=set(test_set[BATCH]) | set(train_set[BATCH]),
    )
    return dg.AssetCheckResult(
        passed=report.ok,
        metadata=report.as_metadata(),
        description=report.summary,
    )
