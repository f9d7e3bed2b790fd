"""Validation (row by row, with a quarantine) and the sealed train/validation/test split."""


from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from dagster._core.event_api import PartitionKeyFilter  # no public export
from dagster._core.storage.asset_check_execution_record import (  # no public export
    AssetCheckExecutionRecordStatus,
)

from mlops_assets.config import ROW_KEY, SPLITS
from mlops_assets.defs.ingestion.sensors import interrupted
from mlops_assets.defs.metadata import (
    file_metadata,
    frame_metadata,
    markdown_table,
    run_failure,
)
from mlops_assets.defs.resources import (
    ProjectResource,
    StoredPartitions,
    batches,
    materialization_runs,
    work_dir,
)
from mlops_assets.lib import io
from mlops_assets.lib.dataset import data, split

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
def validate_batch(context: dg.AssetExecutionContext, raw_batch: Path, project: ProjectResource):
    """Type each row by the contract and quarantine the rows that break it, with reasons
    (a chunk of the batch at a time)."""
    contract = project.contract()
    with work_dir(project, "validate_batch") as work:
        valid, quarantined = work / "valid.parquet", work / "quarantined.parquet"
        found = data.validate_stored(raw_batch, contract, context.partition_key, valid,
                                     quarantined)
        total = found.valid + found.quarantined
        yield dg.Output(
            io.ParquetFile(valid),
            output_name="validated_batch",
            metadata={
                **file_metadata(valid, contract),
                "invalid_fraction": round(found.quarantined / total if total else 0.0, 6),
                "quarantined": found.quarantined,
                "unlabeled": found.unlabeled,
            },
        )
        yield dg.Output(
            io.ParquetFile(quarantined),
            output_name="quarantined_rows",
            metadata={
                **file_metadata(quarantined),
                "reasons_by_column": markdown_table(found.reasons) if len(found.reasons)
                else "none",
                "rows": markdown_table(found.first_quarantined, max_rows=100,
                                       total=found.quarantined)
                if found.quarantined else "none",
            },
        )


@dg.asset_check(
    asset="validated_batch",
    blocking=True,
    partitions_def=batches,
    additional_ins={"quarantined_rows": dg.AssetIn()},
)
def invalid_fraction_below_limit(
    validated_batch: Path, quarantined_rows: Path, project: ProjectResource
) -> dg.AssetCheckResult:
    """No more than the contract's ``max_invalid_fraction`` of the batch is quarantined."""
    limit = project.contract().max_invalid_fraction
    valid, quarantined = (pq.ParquetFile(p).metadata.num_rows
                          for p in (validated_batch, quarantined_rows))
    total = valid + quarantined
    fraction = quarantined / total if total else 1.0
    first = next(io.read_parquet_chunks(quarantined_rows, 20))
    return dg.AssetCheckResult(
        passed=total > 0 and fraction <= limit,
        metadata={
            "invalid_fraction": round(fraction, 6),
            "limit": limit,
            "quarantined": quarantined,
            "rows": total,
            "first_reasons": markdown_table(first[[ROW_KEY, "reason"]], 20)
            if quarantined else "none",
        },
        description=f"{fraction:.2%} of {total} rows invalid (limit {limit:.2%})",
    )


# --- which batches may reach the dataset ------------------------------------------------------

_BATCH_GATES = [
    (dg.AssetCheckKey(dg.AssetKey("raw_batch"), "raw_batch_schema"), "raw_batch"),
    (dg.AssetCheckKey(dg.AssetKey("validated_batch"), "invalid_fraction_below_limit"),
     "validated_batch"),
]


def batch_eligibility(instance: dg.DagsterInstance) -> pd.DataFrame:
    """Every registered batch, in the order it arrived, with whether it may reach the
    dataset and why. Stored rows are not enough: a batch is included only if its latest
    landing passed both blocking checks and its valid rows were derived from that landing
    (a batch that failed, or was re-landed and failed, contributes nothing downstream until
    it is landed again and passes). An included batch names the version that passed:
    ``version``, the run whose validated rows the check judged (a reader reads exactly those
    bytes, whatever lands meanwhile), and ``data_version``, its landed file's content hash."""
    order = instance.get_dynamic_partitions(batches.name)
    infos = {
        (i.check_key.name, i.partition_key): i
        for i in instance.event_log_storage.get_asset_check_partition_info(
            [key for key, _ in _BATCH_GATES], partition_keys=order)
    }
    status = AssetCheckExecutionRecordStatus
    out = []
    for batch in order:
        reason = None
        for key, asset in _BATCH_GATES:
            info = infos.get((key.name, batch))
            if info is None:
                reason = f"{key.name} has not run ({asset} not materialized)"
            elif info.latest_execution_status == status.PLANNED:
                reason = _planned_reason(instance, key, info)
            elif not info.is_current:
                reason = f"{key.name} has not run on the latest {asset}"
            elif info.latest_execution_status != status.SUCCEEDED:
                reason = (f"failed {key.name} (run {info.latest_planned_run_id}): "
                          + _check_description(instance, key, batch))
            if reason:
                break
        judged = {}
        if reason is None:
            judged = {asset: infos[(key.name, batch)].latest_target_materialization_storage_id
                      for key, asset in _BATCH_GATES}
            if None in judged.values() or judged["validated_batch"] < judged["raw_batch"]:
                reason = "validated_batch was not derived from the latest landing"
        out.append({"batch": batch, "included": reason is None, "reason": reason or "passed",
                    **({} if reason else {"_raw_id": judged["raw_batch"],
                                          "_valid_id": judged["validated_batch"]})})
    table = pd.DataFrame(out, columns=["batch", "included", "reason", "_raw_id", "_valid_id"])
    return _with_versions(instance, table)


def _planned_reason(instance: dg.DagsterInstance, key: dg.AssetCheckKey, info) -> str:
    """A check planned by a run: still running, left planned by a run that ended without
    judging the batch (killed, interrupted), which the landing sensor ingests again, or by
    a run a step of which failed on the batch (a file that cannot be read), which it does
    not (the sensor's own judgment, ``interrupted``)."""
    run = instance.get_run_by_id(info.latest_planned_run_id)
    if run is not None and run.status in (dg.DagsterRunStatus.FAILURE,
                                          dg.DagsterRunStatus.CANCELED):
        ended = f"{key.name} never ran: run {run.run_id} ended ({run.status.value.lower()})"
        if interrupted(instance, run):
            return f"{ended} before it; the landing sensor ingests the batch again"
        return f"{ended}: {run_failure(instance, run.run_id)}"
    return f"{key.name} is still running (run {info.latest_planned_run_id})"


def _with_versions(instance: dg.DagsterInstance, table: pd.DataFrame) -> pd.DataFrame:
    """The judged materializations' runs and data versions in place of their storage ids."""
    valid_ids = [int(i) for i in table["_valid_id"].dropna()]
    raw_ids = [int(i) for i in table["_raw_id"].dropna()]
    valid_runs = materialization_runs(instance, dg.AssetKey("validated_batch"), valid_ids)
    raw_versions = {
        r.storage_id: r.asset_materialization.tags.get("dagster/data_version")
        for start in range(0, len(raw_ids), 500)
        for r in instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("raw_batch"), storage_ids=raw_ids[start:start + 500]),
            limit=len(raw_ids[start:start + 500])).records}
    table["version"] = table["_valid_id"].map(valid_runs)
    table["data_version"] = table["_raw_id"].map(raw_versions)
    return table.drop(columns=["_raw_id", "_valid_id"])


def _check_description(instance: dg.DagsterInstance, key: dg.AssetCheckKey, batch: str) -> str:
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, partition_filter=PartitionKeyFilter(key=batch))
    event = records[0].event if records else None
    evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
    return getattr(evaluation, "description", None) or "see the check in the UI"


# --- the sealed split over every batch -------------------------------------------------------


class SplitConfig(dg.Config):
    """How much memory the split may use: rows read at a time, and DuckDB's limit for the
    cross-batch step (it spills to disk past it; a DuckDB size such as "512MB", "2GB")."""

    chunk_rows: int = io.CHUNK_ROWS
    memory_limit: str = "1GB"


@dg.multi_asset(
    group_name="dataset",
    outs={
        **{
            s: dg.AssetOut(description=d, kinds={"pandas"})
            for s, d in [
                ("train_set", "Rows sealed to training, from every valid batch."),
                ("validation_set", "Rows sealed to validation (early stopping, thresholds)."),
                ("test_set", "The sealed test rows: read only by evaluation and the gate."),
            ]
        },
        "duplicate_rows": dg.AssetOut(
            description="Rows that repeat a row of another batch (same features and label), "
                        "set aside with the row they repeat: they reach no split.",
            kinds={"pandas"}),
    },
    ins={"validated_batch": dg.AssetIn(dagster_type=dg.Any),  # StoredPartitions
         # Labels that arrived apart from their rows (joined on the contract's key column).
         "feedback_labels": dg.AssetIn(metadata={"optional": True})},
)
def sealed_split(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    validated_batch: StoredPartitions,
    feedback_labels: pd.DataFrame | None,
    project: ProjectResource,
):
    """Assign every valid row of every batch that passed its checks (at the version that
    passed) to train/validation/test by a hash of its content, set cross-batch duplicates
    aside, and record new test contents in the append-only sealed manifest. Out of core
    (lib/split.split_batches): the batches are read in chunks, the cross-batch step runs in
    DuckDB under ``memory_limit``."""
    contract = project.contract()
    eligibility = batch_eligibility(context.instance)
    judged = eligibility[eligibility["included"]]
    # Each batch is read at the version its checks passed on, not at whatever is stored
    # now: a landing during this build writes a new version beside it.
    versions = dict(zip(judged["batch"], judged["version"], strict=True))
    included = list(versions)
    excluded = eligibility[~eligibility["included"]]
    for r in excluded.itertuples():
        context.log.warning(f"batch {r.batch} excluded: {r.reason}")
    if not included:
        raise ValueError(
            "no batch has passed validation yet: land and ingest a batch first"
            + (f" (excluded: {dict(zip(excluded['batch'], excluded['reason'], strict=True))})"
               if len(excluded) else ""))
    with work_dir(project, "sealed_split") as work:
        result = split.split_batches(
            [(b, validated_batch.path(b, versions[b])) for b in included], feedback_labels,
            contract, project.paths.sealed_test, work, versions=versions,
            memory_limit=config.memory_limit, chunk_rows=config.chunk_rows)
        if result.unlabeled:
            context.log.info(f"{result.unlabeled} rows have no label yet: kept, in no split "
                             "until a label file supplies it (feedback/)")
        batch_table = markdown_table(eligibility.assign(
            data_version=eligibility["data_version"].str[:12]), max_rows=200) \
            if len(eligibility) else "none"
        for name in SPLITS:
            rows = result.rows[name]
            yield dg.Output(
                io.ParquetFile(result.paths[name]),
                output_name=f"{name}_set",
                metadata={
                    **file_metadata(result.paths[name], contract),
                    "batches": ", ".join(included),
                    # What was read: each batch's landed content and stored version.
                    "batch_versions": dg.MetadataValue.json(
                        judged[["batch", "data_version", "version"]].to_dict("records")),
                    "excluded_batches": len(excluded),
                    "batch_status": batch_table,
                    "positive_rate": round(result.positives[name] / rows, 4) if rows else 0.0,
                    "sealed_test_keys": result.manifest.total,
                    "unlabeled_rows_waiting": result.unlabeled,
                },
            )
    duplicates = result.duplicates
    yield dg.Output(duplicates, output_name="duplicate_rows", metadata={
        **frame_metadata(duplicates),
        "rows": markdown_table(duplicates[[ROW_KEY, "reason"]], max_rows=100)
        if len(duplicates) else "none",
    })
    context.log.info(f"split {sum(result.rows.values())} rows from {len(included)} batches; "
                     f"{len(duplicates)} duplicates set aside; {len(excluded)} batches excluded")


@dg.asset_check(
    asset="test_set",
    blocking=True,
    additional_ins={"train_set": dg.AssetIn(), "validation_set": dg.AssetIn()},
)
def test_set_is_sealed(
    test_set: Path, train_set: Path, validation_set: Path, project: ProjectResource,
) -> dg.AssetCheckResult:
    """Train, validation and test are disjoint, and every row ever sealed to test still is."""
    report = split.audit(project.paths.sealed_test, train=train_set,
                         validation=validation_set, test=test_set)
    return dg.AssetCheckResult(
        passed=report.ok,
        metadata=report.as_metadata(),
        description=report.summary,
    )
