"""Ingestion: each landed batch file becomes a partition of ``raw_batch``."""


import dagster as dg
import pandas as pd

from mlops_assets.defs.metadata import frame_metadata, markdown_table
from mlops_assets.defs.resources import ProjectResource, batches
from mlops_assets.lib import data, io
from mlops_assets.schemas import failure_cases, raw_schema, summarize_failures


@dg.asset(
    partitions_def=batches,
    group_name="ingestion",
    kinds={"pandas", "csv"},
    tags={"stage": "ingestion"},
)
def raw_batch(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.Output:
    """A landed batch file, kept as text exactly as it arrived, with an immutable backup."""
    contract = project.contract()
    batch_id = context.partition_key
    path = project.paths.landing / f"{batch_id}{data.BATCH_SUFFIX}"
    sha = io.sha256_file(path)
    backup = data.backup_batch(path, project.paths.backup, batch_id, sha)
    raw = data.read_batch(path, contract)
    profile = data.batch_profile(raw, contract, batch_id)
    nulls = pd.DataFrame(
        list(profile["null_fractions"].items()), columns=["column", "null_fraction"]
    )
    return dg.Output(
        raw,
        data_version=dg.DataVersion(sha),
        metadata={
            **frame_metadata(raw, contract),
            "data_version": sha,
            "source_file": dg.MetadataValue.path(str(path)),
            "backup_file": dg.MetadataValue.path(str(backup)),
            "period_start": profile["period_start"],
            "period_end": profile["period_end"],
            "null_fractions": markdown_table(nulls) if len(nulls) else "no columns",
        },
    )


@dg.asset_check(asset=raw_batch, blocking=True, partitions_def=batches)
def raw_batch_schema(
    context: dg.AssetCheckExecutionContext, raw_batch: pd.DataFrame, project: ProjectResource
) -> dg.AssetCheckResult:
    """The file has rows in the contract's layout, carries every contract column, and its
    numbers parse."""
    contract = project.contract()
    path = project.paths.landing / f"{context.partition_key}{data.BATCH_SUFFIX}"
    problem = data.layout_problem(raw_batch, contract, path)
    if problem:
        return dg.AssetCheckResult(passed=False, description=problem,
                                   metadata={"rows": len(raw_batch), "problem": problem})
    failures = failure_cases(raw_schema(contract), raw_batch)
    return dg.AssetCheckResult(
        passed=failures.empty,
        metadata={
            "rows": len(raw_batch),
            "failure_count": len(failures),
            "failure_cases": markdown_table(failures) if len(failures) else "none",
        },
        description=(
            f"batch {context.partition_key}: "
            + ("ok" if failures.empty else summarize_failures(failures))
        ),
    )
