"""Metadata helpers so every asset shows the same facts in the UI the same way."""

from __future__ import annotations

import hashlib
import inspect
import re
import warnings

import dagster as dg
import pandas as pd

from mlops_assets.config import DatasetContract
from mlops_assets.lib.reporting.report_store import Published


def column_schema(df: pd.DataFrame, contract: DatasetContract | None = None) -> dg.TableSchema:
    """Columns with their types and, given the contract, what it says about each (a
    category column's type is "category", not pandas' "object")."""
    def kind(name: str, dtype) -> str:
        if contract is not None and name in contract.categorical:
            return "category"
        return "text" if str(dtype) in ("object", "string", "large_string") else str(dtype)

    return dg.TableSchema(columns=[
        dg.TableColumn(str(c), kind(str(c), t), description=contract.describe(str(c))
                       if contract else None) for c, t in df.dtypes.items()])


def frame_metadata(df: pd.DataFrame, contract: DatasetContract | None = None) -> dict:
    return {"dagster/row_count": len(df), "dagster/column_schema": column_schema(df, contract)}


def file_metadata(path, contract: DatasetContract | None = None) -> dict:
    """``frame_metadata`` of a table stored as a Parquet file, from its footer (no rows read)."""
    import pyarrow.parquet as pq

    stored = pq.ParquetFile(path)
    empty = stored.schema_arrow.empty_table().to_pandas()
    return {"dagster/row_count": stored.metadata.num_rows,
            "dagster/column_schema": column_schema(empty, contract)}


def markdown_table(df: pd.DataFrame, max_rows: int = 50,
                   total: int | None = None) -> dg.MetadataValue:
    """The first ``max_rows`` rows of ``df``, which may be the head of ``total`` rows; a value
    that does not exist (a one-class slice's AUC) as "-", not "nan"."""
    shown = df.head(max_rows).astype(object)
    shown = shown.where(shown.notna(), "-")
    total = len(df) if total is None else total
    note = f"\n\n({total - max_rows} more rows)" if total > max_rows else ""
    return dg.MetadataValue.md(shown.to_markdown(index=False) + note)


def report_link(published: Published) -> dict:
    """The report's page in the Evidently UI (opens over HTTP from the Dagster UI) and its
    standalone HTML file."""
    return {"link": dg.MetadataValue.url(published.url),
            "path": dg.MetadataValue.path(str(published.path))}


def latest_metadata(instance: dg.DagsterInstance, asset: str,
                    partition: str | None = None) -> tuple[int | None, dict]:
    """The newest materialization of ``asset`` (of one partition): its event id and its
    metadata values; ``(None, {})`` when it was never materialized. Sensors and the replay
    read what an asset recorded this way, never its stored files."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                              asset_partitions=[partition] if partition else None),
        limit=1).records
    if not records:
        return None, {}
    meta = records[0].asset_materialization.metadata
    return records[0].storage_id, {k: v.value for k, v in meta.items()}


OWNERS = ["team:mlops"]


def catalogued(assets: list) -> list:
    """What Dagster users look for on every asset: an owner, its lifecycle stage as a tag, a
    code version (a hash of the asset function's own source, so the UI marks what a code
    change made stale) and references to its source code."""
    versions = {}
    for asset in assets:
        if isinstance(asset, dg.AssetsDefinition):
            source = inspect.getsource(asset.op.compute_fn.decorated_fn)
            versions |= dict.fromkeys(asset.keys, hashlib.sha256(source.encode()).hexdigest()[:12])

    def spec(s: dg.AssetSpec) -> dg.AssetSpec:
        return s.replace_attributes(
            owners=OWNERS, tags={**s.tags, "lifecycle": s.group_name or "default"},
            code_version=versions.get(s.key, s.code_version))

    with warnings.catch_warnings():  # beta APIs, stable for what they are used for here
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.with_source_code_references(dg.map_asset_specs(spec, assets))


def error_message(error) -> str:
    """An error's message without the exception's dotted class name in front."""
    return re.sub(r"^[\w.]+(Error|Exception): ", "", error.message.strip().splitlines()[0])


def run_failure(instance: dg.DagsterInstance, run_id: str) -> str:
    """Why a run failed, in one line for a command-line user, from its events in the
    instance (launched or in-process alike): the failed checks with their reasons, else the
    failed step's error (the user code's exception, not Dagster's wrapper)."""
    lines = []
    for record in instance.get_records_for_run(run_id, limit=10_000).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                lines.append(f"check {evaluation.check_name} on "
                             f"{evaluation.asset_key.to_user_string()} failed: "
                             f"{evaluation.description}")
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and not lines:
            error = event.step_failure_data.error
            error = (error.cause or error) if error else None
            lines.append(f"{event.step_key}: {error_message(error) if error else 'failed'}")
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not lines:
            lines.append(event.message or "run failed")
    run = instance.get_run_by_id(run_id)
    status = run.status.value.lower() if run else "unknown"
    return "; ".join(lines) or f"run {status} (see it in the UI)"
