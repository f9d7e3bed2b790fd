"""Batch scoring: each file of unlabeled rows dropped in ``scoring/landing`` is one partition,
scored by the champion through the batch route's code path and schema (lib/serving/scoring.py), its
rows in the prediction log so the monitoring sees them."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.resources import SENSOR_INTERVAL, ProjectResource, scoring_files
from mlops_assets.lib import io
from mlops_assets.lib.serving import scoring
from mlops_assets.lib.serving.predlog import PredictionLog


@dg.asset(partitions_def=scoring_files, group_name="scoring", kinds={"lightgbm", "parquet"},
          deps=["champion"])
def batch_scores(context: dg.AssetExecutionContext,
                 project: ProjectResource) -> dg.MaterializeResult:
    """One landed file scored by the champion: the rows with request id, probability, label
    and model version, written beside it in ``scoring/scored`` (same format)."""
    path = project.paths.scoring_landing / context.partition_key
    if not path.is_file():
        raise FileNotFoundError(f"scoring file {path} is gone: nothing to score")
    registry = project.registry()
    tag = registry.champion()
    if tag is None:
        raise ValueError("no champion in the registry yet: nothing to score with")
    log = PredictionLog(project.paths.predictions)
    try:
        scored = scoring.score_file(path, project.contract(), registry.load(tag),
                                    project.paths.scored, log)
    except scoring.TableError as err:
        problems = pd.DataFrame(err.problems)
        raise dg.Failure(description=str(err), metadata={
            "problem_count": err.total,
            "problems": markdown_table(problems) if len(problems) else "none",
        }) from err
    finally:
        log.close()
    p = scored.probabilities
    quantiles = {f"p{q}": round(float(np.quantile(p, q / 100)), 4) for q in (10, 50, 90)}
    return dg.MaterializeResult(
        data_version=dg.DataVersion(scored.content_sha256),
        metadata={
            "input_file": dg.MetadataValue.path(str(path)),
            "output_file": dg.MetadataValue.path(str(scored.output)),
            "dagster/row_count": scored.rows,
            "model_version": scored.model_version,
            "predicted_positive": scored.positives,
            "mean_probability": round(float(p.mean()), 4),
            **{f"probability_{k}": v for k, v in quantiles.items()},
            "score_histogram": markdown_table(pd.DataFrame({
                "probability_bin": [f"{a:.1f}-{a + 0.1:.1f}" for a in np.arange(0, 1, 0.1)],
                "rows": np.histogram(p, bins=np.linspace(0, 1, 11))[0],
            })),
        },
    )


score_job = dg.define_asset_job(
    "score_batch", selection=[batch_scores],
    description="Score one landed file of unlabeled rows with the champion (one partition).",
)


@dg.sensor(job=score_job, minimum_interval_seconds=SENSOR_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches scoring/landing; each new or changed file is scored once.")
def scoring_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    seen, kept = _cursor(context.cursor)
    files = scoring.scoring_files(project.paths.scoring_landing)
    # Only new or changed files are read (``io.content_hashes``, as the landing sensor does).
    landed, kept = io.content_hashes(files, kept)
    new = {name: sha for name, sha in landed.items() if seen.get(name) != sha}
    if new and project.registry().champion() is None:  # they wait; nothing is marked seen
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"no champion yet: {len(new)} file(s) in {project.paths.scoring_landing} wait"),
            cursor=_dump(seen, kept))
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"nothing new in {project.paths.scoring_landing} ({len(files)} whole files)"),
            cursor=_dump(seen, kept))
    existing = set(context.instance.get_dynamic_partitions(scoring_files.name))
    added = sorted(set(new) - existing)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}:{sha}")
                      for name, sha in new.items()],
        dynamic_partitions_requests=[scoring_files.build_add_request(added)] if added else [],
        cursor=_dump({**seen, **new}, kept),
    )


def _cursor(text: str | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The scoring sensor's cursor: the content scored of each file, and the hashes kept
    with each file's identity. A cursor from before hashes were kept holds the first only."""
    raw = json.loads(text) if text else {}
    if "seen" not in raw:
        return raw, {}
    return raw["seen"], raw["hashes"]


def _dump(seen: dict[str, str], kept: dict[str, list[str]]) -> str:
    return json.dumps({"seen": seen, "hashes": kept})
