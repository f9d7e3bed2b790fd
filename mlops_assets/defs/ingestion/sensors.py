"""The landing sensor: each new batch file becomes a partition; the batches landed in a tick
are ingested by one run (two at most, one per core), ``ingest_landed``, which materializes
each batch as its own run of ``ingest_batch`` in its process: each partition keeps its own
materialization, data version and blocking checks (a failing batch blocks only itself), and
the batches pay one process start-up between them instead of one each."""


import hashlib
import json
import time
import uuid
from datetime import UTC, datetime

import dagster as dg

from mlops_assets.defs.ingestion.assets import raw_batch
from mlops_assets.defs.resources import SENSOR_INTERVAL, ProjectResource, batches
from mlops_assets.lib import io
from mlops_assets.lib.dataset import data

ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.groups("ingestion", "validation"),
    description="Ingest and validate one landed batch (one partition).",
)

CONTENT_TAG = "mlops/content"  # the landed file's content hash, on every ingestion run
PARENT_TAG = "mlops/ingested_by"  # the ingest_landed run a batch's run was made by
MAX_ATTEMPTS = 3  # ingestions of one content that may end interrupted before it is left
RUNS_PER_TICK = 2  # the batches of a tick are shared among this many runs (two cores), by size
# What a batch's run costs whatever its size, in bytes of work: ~0.45 s a batch (12 small
# batches in two runs, 0.40-0.53 s each) at the ~34 MB/s a run ingests (1000x: 917 MB in 27 s).
BATCH_RUN_BYTES = 16 << 20


def ingest(job: dg.JobDefinition, instance: dg.DagsterInstance,
           batches: list[tuple[str, str, int]], tags: dict | None = None, log=None
           ) -> list[dg.ExecuteInProcessResult]:
    """Materialize each (batch, content hash, attempt) as its own run of ``job`` (the
    per-partition ingestion), one after another in this process."""
    out = []
    for batch, sha, attempt in batches:
        run_id = str(uuid.uuid4())
        try:
            result = job.execute_in_process(
                instance=instance, partition_key=batch, raise_on_error=False, run_id=run_id,
                tags={**(tags or {}), "batch": batch, CONTENT_TAG: sha,
                      "dagster/run_key": run_key(batch, sha, attempt)})
        except BaseException:  # Ctrl-C, a stop: the run may exist and not have started
            _end_unfinished(instance, run_id)
            raise
        if log:
            log(f"{batch}: run {result.run_id} "
                + ("succeeded" if result.success else "failed (see that run)"))
        out.append(result)
    return out


def _end_unfinished(instance: dg.DagsterInstance, run_id: str) -> None:
    """Mark ``run_id`` failed if it exists and has not ended: interrupted between its
    creation and its start, it would stay NOT_STARTED (no worker for run monitoring to find
    gone) and the landing sensor would wait on it as in flight. Failed so, it counts as
    interrupted (no check or step judged the batch) and the batch is ingested again."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status not in TERMINAL_RUN:
        instance.report_run_failed(run, "interrupted before its batch was judged")


class LandedConfig(dg.Config):
    """The batches one ingest_landed run ingests: names, content hashes and attempts."""

    batches: list[str]
    contents: list[str]
    attempts: list[int]

    def requests(self) -> list[tuple[str, str, int]]:
        return list(zip(self.batches, self.contents, self.attempts, strict=True))


@dg.op
def ingest_landed_batches(context: dg.OpExecutionContext, config: LandedConfig) -> None:
    """Each landed batch as its own ingest_batch run, in this run's process: the job from the
    code location this run was launched from (same home, same contract)."""
    job = context.repository_def.get_job(ingest_job.name)
    inherited = {k: v for k, v in context.run.tags.items() if k == "dagster/sensor_name"}
    results = ingest(job, context.instance, config.requests(),
                     {**inherited, PARENT_TAG: context.run_id}, context.log.info)
    failed = [b for (b, _, _), r in zip(config.requests(), results, strict=True)
              if not r.success]
    if failed:
        raise dg.Failure(description=f"{len(failed)} of {len(results)} batches did not pass: "
                                     f"{failed} (each run says why; the others are ingested)",
                         metadata={"failed": ", ".join(failed)})


@dg.job(description="Ingest the batches the landing sensor saw in one tick: each its own "
                    "ingest_batch run, all in this run's process.")
def ingest_landed():
    ingest_landed_batches()


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


def _cursor(text: str | None
            ) -> tuple[dict[str, str], float, dict[str, int], list[str], dict[str, list[str]]]:
    raw = json.loads(text) if text else {}
    if "known" not in raw:  # the cursor before interrupted runs were looked for
        return raw, time.time(), {}, [], {}
    return (raw["known"], raw["checked_until"], raw.get("retried", {}), raw.get("pending", []),
            raw.get("hashes", {}))


IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING]


def _batches_of(run: dg.DagsterRun) -> list[str]:
    """``batch:content`` of each batch an ingest_landed run was asked to ingest."""
    config = run.run_config.get("ops", {}).get("ingest_landed_batches", {}).get("config", {})
    return [f"{b}:{sha}" for b, sha in zip(config.get("batches", []),
                                           config.get("contents", []), strict=False)]


def _retries(instance: dg.DagsterInstance, since: float, landed: dict[str, str],
             known: dict[str, str], retried: dict[str, int], pending: list[str],
             log) -> dict[str, int]:
    """Batches to ingest again, with their attempt number: those whose ingest_landed run
    ended (killed, interrupted, lost) before their own run judged them. A batch failed by
    its checks or its own error is not retried; none more than MAX_ATTEMPTS times in all
    (``retried``, kept in the cursor, counts the retries asked for). A batch that cannot be
    decided yet (its own run not ended, or an ingest_landed run for it still queued or
    running) stays in ``pending`` (kept in the cursor) and is looked at again next tick,
    however long ago its ingest_landed run ended; one already asked for again is not asked
    for twice."""
    retry: dict[str, int] = {}
    ended = instance.get_runs(dg.RunsFilter(
        job_name=ingest_landed.name, statuses=[dg.DagsterRunStatus.FAILURE,
                                               dg.DagsterRunStatus.CANCELED],
        updated_after=datetime.fromtimestamp(since - 60, tz=UTC)), limit=200)
    candidates = dict.fromkeys([*pending, *(key for run in ended for key in _batches_of(run))])
    if not candidates:
        return retry
    in_flight = {key for run in instance.get_runs(dg.RunsFilter(
        job_name=ingest_landed.name, statuses=IN_FLIGHT)) for key in _batches_of(run)}
    undecided: list[str] = []
    for key in candidates:
        batch, _, sha = key.rpartition(":")
        if batch in retry or landed.get(batch) != sha or known.get(batch) != sha \
                or retried.get(key, 0) >= MAX_ATTEMPTS - 1:
            continue
        tries = attempts(instance, batch, sha)
        if key in in_flight or (tries and tries[0].status not in TERMINAL_RUN):
            undecided.append(key)  # being ingested (again): decided by its own run
            continue
        if tries and not interrupted(instance, tries[0]):
            continue  # judged: passed, or failed by its checks or its own error
        retried[key] = retried.get(key, 0) + 1
        retry[batch] = retried[key]
        log(f"{batch}: its ingestion ended before judging the batch; ingesting it again "
            f"(attempt {retry[batch] + 1})")
    pending[:] = undecided
    return retry


TERMINAL_RUN = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED}


@dg.sensor(
    job=ingest_landed,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing directory; a new or changed batch file is ingested once "
                "(again if its ingestion was interrupted); the batches of a tick share one or "
                "two runs.",
)
def landing_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    cursor, checked_until, retried, pending, hashes = _cursor(context.cursor)
    now = time.time()
    files = data.landed_files(project.paths.landing)
    waiting = {b: why for b, p in files.items() if (why := data.incomplete_reason(p))}
    # Only new or changed files are read: an idle tick over 1000x's 4.9 GB took 3.2 s.
    landed, hashes = io.content_hashes({b: p for b, p in files.items() if b not in waiting},
                                       hashes)
    # The instance is the truth: a batch ingested outside this sensor (the demo, a backfill)
    # whose content has not changed is not ingested again.
    known = dict(cursor)
    for batch, sha in landed.items():
        if known.get(batch) != sha and ingested_version(context.instance, batch) == sha:
            known[batch] = sha
    retry = _retries(context.instance, checked_until, landed, known, retried, pending,
                     context.log.warning)
    plan = data.plan_ingestion(landed, known)
    skipped = {**plan.skipped, **waiting}
    known.update(plan.to_ingest)
    new_cursor = json.dumps({"known": known, "checked_until": now, "retried": retried,
                             "pending": pending, "hashes": hashes})
    requests = sorted({**{b: (sha, 0) for b, sha in plan.to_ingest.items()},
                       **{b: (landed[b], n) for b, n in retry.items()}}.items())
    existing = set(context.instance.get_dynamic_partitions(batches.name))
    new_partitions = sorted({b for b, _ in requests} - existing)
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
    asked = dict(requests)
    groups = data.share_by_size({b: _size(files[b]) for b in asked}, RUNS_PER_TICK,
                                BATCH_RUN_BYTES)
    return dg.SensorResult(
        run_requests=[landed_request([(b, asked[b]) for b in group]) for group in groups],
        dynamic_partitions_requests=[batches.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=new_cursor,
    )


def _size(path) -> int:
    """A landed file's size in bytes (0 if it went away since it was listed: its run then
    says so)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def landed_request(group: list[tuple[str, tuple[str, int]]]) -> dg.RunRequest:
    """One ingest_landed run for ``group``: (batch, (content hash, attempt)) pairs."""
    names = [b for b, _ in group]
    identity = "|".join(f"{b}:{sha}:{n}" for b, (sha, n) in group)
    return dg.RunRequest(
        run_key="landed:" + hashlib.sha256(identity.encode()).hexdigest()[:32],
        run_config={"ops": {"ingest_landed_batches": {"config": {
            "batches": names, "contents": [sha for _, (sha, _) in group],
            "attempts": [n for _, (_, n) in group]}}}},
        tags={"batches": (", ".join(names))[:200]})
