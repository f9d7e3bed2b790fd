"""The landing sensor: each new batch file becomes a partition and one ingestion run."""


import json
import time
from datetime import UTC, datetime

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

CONTENT_TAG = "mlops/content"  # the landed file's content hash, on every ingestion run
MAX_ATTEMPTS = 3  # ingestions of one content that may end interrupted before it is left


def ingested_version(instance: dg.DagsterInstance, batch: str) -> str | None:
    record = instance.get_latest_data_version_record(raw_batch.key, partition_key=batch)
    if record is None or record.asset_materialization is None:
        return None
    return record.asset_materialization.tags.get("dagster/data_version")


def attempts(instance: dg.DagsterInstance, batch: str, sha: str) -> list[dg.DagsterRun]:
    """The ingestion runs of ``batch`` with this content, newest first."""
    return list(instance.get_runs(dg.RunsFilter(
        job_name=ingest_job.name, tags={"batch": batch, CONTENT_TAG: sha})))


def interrupted(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Did ``run`` end before it judged its batch (killed, Ctrl-C, a lost worker), rather
    than by a failed check or an error of the batch itself? Such a batch is ingested again."""
    if run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return False
    for record in instance.get_records_for_run(run.run_id, limit=10_000).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if (event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
                and not event.event_specific_data.passed):
            return False
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            names = {e.cls_name for e in (error, getattr(error, "cause", None)) if e}
            if names - {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}:
                return False
    return True


def run_key(batch: str, sha: str, attempt: int) -> str:
    return f"{batch}:{sha}" + (f":{attempt}" if attempt else "")


def _cursor(text: str | None) -> tuple[dict[str, str], float]:
    raw = json.loads(text) if text else {}
    if "known" not in raw:  # the cursor before interrupted runs were looked for
        return raw, time.time()
    return raw["known"], raw["checked_until"]


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing directory; a new or changed batch file is ingested once "
                "(again if its ingestion was interrupted).",
)
def landing_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    cursor, checked_until = _cursor(context.cursor)
    now = time.time()
    files = data.landed_files(project.paths.landing)
    waiting = {b: why for b, p in files.items() if (why := data.incomplete_reason(p))}
    landed = {b: io.sha256_file(p) for b, p in files.items() if b not in waiting}
    # The instance is the truth: a batch ingested outside this sensor (the demo, a backfill)
    # whose content has not changed is not ingested again.
    known = dict(cursor)
    for batch, sha in landed.items():
        if known.get(batch) != sha and ingested_version(context.instance, batch) == sha:
            known[batch] = sha
    # An ingestion that ended before judging its batch is run again (a few times at most).
    retry: dict[str, int] = {}
    ended = context.instance.get_runs(dg.RunsFilter(
        job_name=ingest_job.name, statuses=[dg.DagsterRunStatus.FAILURE,
                                            dg.DagsterRunStatus.CANCELED],
        updated_after=datetime.fromtimestamp(checked_until - 60, tz=UTC)), limit=200)
    for run in ended:
        batch, sha = run.tags.get("batch"), run.tags.get(CONTENT_TAG)
        if batch in retry or landed.get(batch) != sha or known.get(batch) != sha:
            continue
        tries = attempts(context.instance, batch, sha)
        if tries and tries[0].run_id == run.run_id and len(tries) < MAX_ATTEMPTS \
                and interrupted(context.instance, run):
            retry[batch] = len(tries)
            context.log.warning(f"{batch}: run {run.run_id} ended before judging the batch; "
                                f"ingesting it again (attempt {len(tries) + 1})")
    plan = data.plan_ingestion(landed, known)
    skipped = {**plan.skipped, **waiting}
    known.update(plan.to_ingest)
    new_cursor = json.dumps({"known": known, "checked_until": now})
    requests = {**{b: (sha, 0) for b, sha in plan.to_ingest.items()},
                **{b: (landed[b], n) for b, n in retry.items()}}
    existing = set(context.instance.get_dynamic_partitions(batches.name))
    new_partitions = sorted(set(requests) - existing)
    if not requests:
        reason = (
            "no batch files in " + str(project.paths.landing)
            if not files
            else f"nothing new in {len(files)} batch files:\n"
            + "\n".join(f"{b}: {why}" for b, why in sorted(skipped.items()))
        )
        return dg.SensorResult(skip_reason=dg.SkipReason(reason[:2000]), cursor=new_cursor)
    for batch, why in skipped.items():
        if not why.startswith("already"):
            context.log.warning(f"{batch}: {why}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=batch, run_key=run_key(batch, sha, attempt),
                          tags={"batch": batch, CONTENT_TAG: sha})
            for batch, (sha, attempt) in sorted(requests.items())
        ],
        dynamic_partitions_requests=[batches.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=new_cursor,
    )
