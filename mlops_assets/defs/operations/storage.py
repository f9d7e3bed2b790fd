"""Retention of stored versions (lib/retention.py's rule, fed from the instance, the registry
and the sealed manifest): a daily job, also run by `mlops-assets gc`."""


import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.config import BATCH, VERSION
from mlops_assets.defs.resources import ParquetIOManager, ProjectResource
from mlops_assets.lib import retention

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING]


def _materializations(instance: dg.DagsterInstance, asset: str
                      ) -> Iterator[retention.Materialization]:
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetKey(asset), limit=1000, cursor=cursor)
        for record in result.records:
            mat = record.asset_materialization
            yield retention.Materialization(asset, mat.partition if mat else None,
                                            record.run_id, record.timestamp)
        if not result.has_more:
            return
        cursor = result.cursor


def _lineage(project: ProjectResource) -> tuple[set[str], set[tuple[str, str]]]:
    """What the registered models were trained on (dataset build runs, batch versions) and
    the batch versions the sealed manifest's contents were sealed from."""
    registry = project.registry()
    runs, versions = set(), set()
    for tag in registry.versions():
        meta = registry.get(tag).info.metadata
        if meta.get("dataset_run_id"):
            runs.add(meta["dataset_run_id"])
        versions |= {(v["batch"], v["version"]) for v in meta.get("batch_versions") or []}
    manifest = project.paths.sealed_test
    if manifest.is_file():
        sealed = pd.read_parquet(manifest, columns=None)
        if VERSION in sealed:
            versions |= set(sealed[[BATCH, VERSION]].dropna().itertuples(index=False,
                                                                        name=None))
    return runs, versions


def collect(instance: dg.DagsterInstance, project: ProjectResource, root: Path,
            grace_s: float, dry_run: bool = False) -> list[retention.Stored]:
    """Delete (or, ``dry_run``, list) the stored versions the retention rule lets go."""
    flying = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT))
    cutoff = min([time.time() - grace_s,
                  *(r.start_time or r.create_timestamp.timestamp() for r in flying)])
    files = list(retention.stored(root))
    mats = [m for asset in sorted({f.asset for f in files})
            for m in _materializations(instance, asset)]
    runs, versions = _lineage(project)
    gone = retention.collectable(files, mats, cutoff,
                                 runs | {r.dagster_run.run_id for r in flying}, versions)
    if not dry_run:
        for f in gone:
            f.path.unlink(missing_ok=True)
            if f.partition is not None and not any(f.path.parent.iterdir()):
                f.path.parent.rmdir()
    return gone


class RetentionConfig(dg.Config):
    """Versions superseded less than ``grace_hours`` ago are kept (beside every version a
    run in flight, a registered model or the sealed manifest refers to)."""

    grace_hours: float = 24.0
    dry_run: bool = False


@dg.op
def collect_stored_versions(context: dg.OpExecutionContext, config: RetentionConfig,
                            project: ProjectResource,
                            io_manager: dg.ResourceParam[ParquetIOManager]) -> None:
    """Delete the stored versions nothing refers to any more."""
    root = Path(io_manager.base_dir)
    sizes = {f.path: f.path.stat().st_size for f in retention.stored(root)}
    gone = collect(context.instance, project, root, config.grace_hours * 3600, config.dry_run)
    freed = sum(sizes.get(f.path, 0) for f in gone)
    context.log.info(f"{'would delete' if config.dry_run else 'deleted'} {len(gone)} of "
                     f"{len(sizes)} stored versions under {root} ({freed / 2**20:.1f} MiB)")


@dg.job(description="Delete stored versions that no latest materialization, run in flight, "
                    "registered model or sealed manifest refers to (daily).")
def collect_storage():
    collect_stored_versions()


daily_retention = dg.ScheduleDefinition(
    job=collect_storage, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING)
