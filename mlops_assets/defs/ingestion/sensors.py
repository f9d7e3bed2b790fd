"""The landing sensor: each new batch file becomes a partition and one ingestion run."""


import json

import dagster as dg

from mlops_assets.defs.ingestion.assets import raw_batch
from mlops_assets.defs.resources import SENSOR_INTERVAL, ProjectResource, batches
from mlops_assets.lib import data, io

ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.groups("ingestion", "validation"),
    partitions_def=batches,
    description="Ingest and validate one landed batch (one partition).",
)


def ingested_version(instance: dg.DagsterInstance, batch: str) -> str | None:
    record = instance.get_latest_data_version_record(raw_batch.key, partition_key=batch)
    if record is None or record.asset_materialization is None:
        return None
    return record.asset_materialization.tags.get("dagster/data_version")


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing directory; a new or changed batch file is ingested once.",
)
def landing_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    files = data.landed_files(project.paths.landing)
    waiting = {b: why for b, p in files.items() if (why := data.incomplete_reason(p))}
    landed = {b: io.sha256_file(p) for b, p in files.items() if b not in waiting}
    # The instance is the truth: a batch ingested outside this sensor (the demo, a backfill)
    # whose content has not changed is not ingested again.
    known = dict(cursor)
    for batch, sha in landed.items():
        if known.get(batch) != sha and ingested_version(context.instance, batch) == sha:
            known[batch] = sha
    plan = data.plan_ingestion(landed, known)
    skipped = {**plan.skipped, **waiting}
    known.update(plan.to_ingest)
    existing = set(context.instance.get_dynamic_partitions(batches.name))
    new_partitions = sorted(set(plan.to_ingest) - existing)
    if not plan.to_ingest:
        reason = (
            "no batch files in " + str(project.paths.landing)
            if not files
            else f"nothing new in {len(files)} batch files:\n"
            + "\n".join(f"{b}: {why}" for b, why in sorted(skipped.items()))
        )
        return dg.SensorResult(skip_reason=dg.SkipReason(reason[:2000]), cursor=json.dumps(known))
    for batch, why in skipped.items():
        if not why.startswith("already"):
            context.log.warning(f"{batch}: {why}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=batch, run_key=f"{batch}:{sha}", tags={"batch": batch})
            for batch, sha in plan.to_ingest.items()
        ],
        dynamic_partitions_requests=[batches.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=json.dumps(known),
    )
