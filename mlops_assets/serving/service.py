"""The champion as a BentoML service: ``bentoml serve`` in the repository root serves it.

Two ``@bentoml.api`` endpoints, so BentoML's own clients (``bentoml.SyncHTTPClient``,
``AsyncHTTPClient``), its OpenAPI schema at /docs.json and its tooling apply, and plain HTTP
(curl) keeps the same contract:

- POST /predict takes ``{"records": [...]}`` (1 to MLOPS_MAX_RECORDS records, validated by a
  model generated from the dataset contract) and answers per record: probability, label at
  the model's threshold, model version, variant and a request id. It is *batchable*:
  BentoML's adaptive batching gathers concurrent requests (up to MLOPS_MAX_RECORDS records,
  so no request is split; a request waits at most MLOPS_MAX_LATENCY_MS), so a batch costs one
  prediction call and one write to the prediction log (MLOPS_ADAPTIVE_BATCHING=0: each
  request on its own; which is faster depends on the concurrency: docs/benchmarks.md). Client:
  ``client.predict(records=[{...}])``.
- POST /predict_batch takes a table (the raw body: CSV or Parquet, up to
  MLOPS_MAX_BATCH_ROWS rows), validates it column by column against the contract's domains
  (Pandera) and answers a table of the same format, one row per row; each table is one
  Parquet file in the prediction log. Client: ``client.predict_batch(Path("rows.csv"))``
  returns the path of the answer.

The model is the registry's champion (hot-swapped when the alias moves) or MLOPS_MODEL_TAG;
a canary alias takes MLOPS_CANARY_SHARE of the batches. Every answered prediction is in the
prediction log. Settings: see ``settings.py``.
"""

from __future__ import annotations

import errno
import functools
import gc
import json
import logging
import time
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse, Response

from mlops_assets.config import DatasetContract, load_contract
from mlops_assets.lib.dataset import features
from mlops_assets.lib.governance.registry import PRODUCTION, Registry
from mlops_assets.lib.serving import scoring
from mlops_assets.lib.serving.predlog import PredictionLog
from mlops_assets.lib.training.model import ServingModel
from mlops_assets.serving.inputs import ColumnReader, Prediction, request_model
from mlops_assets.serving.middleware import RequestGuard, Route
from mlops_assets.serving.patches import patch_timeout_middleware
from mlops_assets.serving.runtime import ModelRuntime
from mlops_assets.serving.settings import ServingSettings

# A built Bento carries bundle.json (written by lib/governance/bento.py): it serves the one model it
# was built with, from the Bento's own model store, and ignores the registry's aliases.
BUNDLE_FILE = Path(__file__).with_name("bundle.json")
BUNDLE = json.loads(BUNDLE_FILE.read_text()) if BUNDLE_FILE.is_file() else None
SETTINGS = ServingSettings.from_env()
logger = logging.getLogger("mlops_assets.serving")
CONTRACT = (DatasetContract.model_validate(BUNDLE["contract"]) if BUNDLE
            else load_contract(SETTINGS.contract))
PredictRequest = request_model(CONTRACT, SETTINGS.max_records, bentoml.IODescriptor)
read_columns = ColumnReader(CONTRACT)
TABLE_TYPES = tuple(scoring.FORMATS)
patch_timeout_middleware()


class Unavailable(BentoMLException):
    """A 5xx of the batched route with its reason. BentoML answers any raised 5xx with a
    generic message; the guard (middleware.py) puts this reason back into the body."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason, error_code=status)
        HEALTH.last_error = (reason, time.monotonic())


class Health:
    """What /readyz says when there is no model to serve: the reason, not a bare 503; and
    the reason of the last 5xx the batched route raised (for the guard)."""

    runtime: ModelRuntime | None = None
    log: PredictionLog | None = None
    last_error: tuple[str, float] | None = None

    def __call__(self) -> tuple[bool, str]:
        if self.runtime is None:
            return False, "the service is still starting"
        return self.runtime.ready, self.runtime.not_ready_reason

    def recent_error(self) -> str | None:
        """The reason of the batched route's last 5xx, if it was raised in the last 2 s
        (every request of a failed batch is answered within that)."""
        if self.last_error is None or time.monotonic() - self.last_error[1] > 2.0:
            return None
        return self.last_error[0]


HEALTH = Health()

PREDICTIONS = bentoml.metrics.Counter(
    name="mlops_predictions",
    documentation="Predictions answered, by model version and variant",
    labelnames=["model_version", "variant"],
)
SCORES = bentoml.metrics.Histogram(
    name="mlops_prediction_score",
    documentation="Predicted probabilities, by variant",
    labelnames=["variant"],
    buckets=tuple(i / 10 for i in range(1, 11)),
)


@functools.lru_cache(maxsize=64)
def _metrics(version: str, variant: str):
    """The two metrics' children for a model version and variant, looked up once
    (``labels()`` takes a lock and builds a key on every call)."""
    return PREDICTIONS.labels(model_version=version, variant=variant), SCORES.labels(
        variant=variant)


def _log_failure(err: OSError) -> tuple[HTTPStatus, str]:
    status = (HTTPStatus.INSUFFICIENT_STORAGE if err.errno in (errno.ENOSPC, errno.EDQUOT)
              else HTTPStatus.SERVICE_UNAVAILABLE)
    return status, (f"prediction log {SETTINGS.prediction_log} cannot be written "
                    f"({errno.errorcode.get(err.errno, err.errno)}: {err.strerror}); "
                    "nothing was answered or logged")


def _shadow_scores(shadow: ServingModel | None, model: ServingModel, matrix, columns):
    """The shadow model's probabilities for the request (the answering model's matrix when
    both were trained on the same contract), or None (no shadow, or it failed: a shadow never
    fails a request; the error is logged)."""
    if shadow is None:
        return None
    try:
        if shadow.contract != model.contract:
            matrix = features.encode(columns, shadow.contract)
        return shadow.predict_matrix(matrix)
    except Exception:
        logger.exception("shadow %s failed to score; the request is answered anyway",
                         shadow.version)
        return None


def _choose() -> tuple[str, ServingModel, ServingModel | None] | str:
    """The (variant, model, shadow) of one snapshot, or the reason there is no model."""
    runtime = HEALTH.runtime
    variant, model, shadow = runtime.choose() if runtime else ("champion", None, None)
    if model is None:
        return runtime.not_ready_reason if runtime else "the service is still starting"
    return variant, model, shadow


def _refuse(context: bentoml.Context, body: dict, status: int) -> JSONResponse:
    """A 4xx/5xx of the table route. BentoML sets the status of an endpoint that takes the
    context from the context, so it is set there too."""
    context.response.status_code = status
    return JSONResponse(body, status_code=status)


def _table_format(media: str, path: Path) -> str | None:
    """The table's format: its declared media type, or Parquet by its magic bytes (a client
    that cannot name Parquet's media type, as BentoML's does for a .parquet file, sends it
    as application/json or octet-stream)."""
    if media in scoring.FORMATS:
        return scoring.FORMATS[media]
    with open(path, "rb") as f:
        return "parquet" if f.read(4) == b"PAR1" else None


@bentoml.service(
    name="mlops_classifier",
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 30},
    workers=1,
    # The predict routes are recorded per row in the prediction log; BentoML's access log
    # line and OpenTelemetry span per request add nothing to it and cost time on the hot path
    # (docs/benchmarks.md). Every other path keeps both.
    logging={"access": {"skip_paths": ["/predict", "/predict_batch"]}},
    tracing={"excluded_urls": ["/predict", "/predict_batch"]},
)
class Classifier:
    if BUNDLE:
        bundled_model = bentoml.models.BentoModel(BUNDLE["model_tag"])

    def __init__(self) -> None:
        if BUNDLE:
            tag = BUNDLE["model_tag"]
            path = Path(self.bundled_model.path)
            self.runtime = ModelRuntime(
                lambda _: ServingModel.from_dir(path, tag), lambda: {PRODUCTION: tag}, 0.0
            )
        else:
            self.runtime = ModelRuntime.from_registry(
                Registry(SETTINGS.home), SETTINGS.canary_share, pinned=SETTINGS.model_tag,
                shadow_share=SETTINGS.shadow_share,
            )
        self.log = PredictionLog(SETTINGS.prediction_log)
        HEALTH.runtime, HEALTH.log = self.runtime, self.log
        self.runtime.refresh()
        self._check_contract()
        self.runtime.start(SETTINGS.reload_seconds)
        # The imported heap is large and long-lived: keep it out of the collector's way.
        gc.collect()
        gc.freeze()

    def _check_contract(self) -> None:
        champion = self.runtime.variants.champion
        if champion is not None and champion.contract.features != CONTRACT.features:
            raise RuntimeError(
                f"champion {champion.version} was trained on contract "
                f"{champion.contract.name!r}, but this service validates {CONTRACT.name!r}"
            )

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    @bentoml.api(route="/predict", input_spec=PredictRequest,
                 batchable=SETTINGS.adaptive_batching,
                 # in records: BentoML splits a request larger than this across batches
                 max_batch_size=max(2, SETTINGS.max_records),
                 max_latency_ms=SETTINGS.max_latency_ms)
    async def predict(self, records: list) -> list[Prediction]:
        """One probability, label, model version, variant and request id per record.

        Batched: ``records`` holds the records of every request in the batch; one
        prediction call and one log write answer them all (on the event loop: a batch of a
        few records is well under a millisecond)."""
        started = time.perf_counter()
        chosen = _choose()
        if isinstance(chosen, str):
            raise Unavailable(HTTPStatus.SERVICE_UNAVAILABLE, chosen)
        variant, model, shadow = chosen
        columns = read_columns(records)
        matrix = features.encode(columns, model.contract)
        probabilities = model.predict_matrix(matrix).tolist()
        threshold = model.threshold
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        shadowed = _shadow_scores(shadow, model, matrix, columns)
        ts = time.time()
        out, rows = [], []
        predictions, score_metric = _metrics(model.version, variant)
        for i, p in enumerate(probabilities):
            rid = uuid.uuid4().hex
            label = int(p >= threshold)
            out.append(Prediction.model_construct(
                request_id=rid, probability=p, label=label, model_version=model.version,
                variant=variant))
            row = {"ts": ts, "request_id": rid, "model_version": model.version,
                   "variant": variant, "inputs": {c: v[i] for c, v in columns.items()},
                   "probability": p, "label": label, "latency_ms": latency_ms}
            if shadowed is not None:
                row.update(shadow_version=shadow.version,
                           shadow_probability=float(shadowed[i]),
                           shadow_label=int(shadowed[i] >= shadow.threshold))
            rows.append(row)
            score_metric.observe(p)
        try:
            self.log.write(rows)
        except OSError as err:  # nothing is answered that is not in the log
            raise Unavailable(*_log_failure(err)) from err
        predictions.inc(len(out))
        return out

    @bentoml.api(route="/predict_batch")
    def predict_batch(
        self, table: Annotated[Path, bentoml.validators.ContentType("text/csv")], /,
        context: bentoml.Context,
    ) -> Annotated[Path, bentoml.validators.ContentType("text/csv")]:
        """A CSV or Parquet table in (the raw body), a table of the same format out, one
        row per row; cells that break the contract are a 422 naming row, column and value.
        Content types: text/csv, application/vnd.apache.parquet (or a Parquet file sent as
        application/json or application/octet-stream, as BentoML's client sends one)."""
        started = time.perf_counter()
        media = context.request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = _table_format(media, table)
        if fmt is None:
            return _refuse(context, {"error": f"content type {media!r} is not a table: send "
                                          f"{' or '.join(TABLE_TYPES)}"},
                                HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        chosen = _choose()
        if isinstance(chosen, str):
            return _refuse(context, {"error": chosen}, HTTPStatus.SERVICE_UNAVAILABLE)
        variant, model, shadow = chosen
        try:
            frame = scoring.load_table(table.read_bytes(), fmt, CONTRACT,
                                       SETTINGS.max_batch_rows)
        except scoring.TableError as err:
            return _refuse(context, err.body(), err.status)
        matrix = scoring.matrix(frame, model.contract)
        probabilities = model.predict_matrix(matrix)
        answer = scoring.answer(probabilities, model.threshold, model.version, variant)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        shadowed = _shadow_scores(shadow, model, matrix,
                                  {n: frame[n] for n in CONTRACT.features})
        logged = answer if shadowed is None else scoring.with_shadow(answer, shadowed, shadow)
        try:
            self.log.write_table(frame, logged, latency_ms)
        except OSError as err:  # nothing is answered that is not in the log
            status, reason = _log_failure(err)
            return _refuse(context, {"error": reason}, status)
        _metrics(model.version, variant)[0].inc(answer.num_rows)
        return Response(scoring.to_bytes(answer, fmt), media_type=scoring.MEDIA[fmt], headers={
            "content-disposition": f'attachment; filename="predictions.{fmt}"'})

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.runtime.stop()
        self.log.close()


# BentoML derives an answer's media type from its JSON schema, which it generates again for
# every answer unless the output model names it (~0.8 ms of a /predict answer, 38% of the
# server's time at concurrency 1): named here, as IODescriptor.media_type allows.
Classifier.apis["predict"].output_spec.media_type = "application/json"

Classifier.add_asgi_middleware(
    RequestGuard,
    routes={
        "/predict": Route(("application/json",), SETTINGS.max_body_bytes,
                          '{"records": [{...}, ...]}'),
        # BentoML's client sends a .parquet file as application/json: judged by its bytes.
        "/predict_batch": Route((*TABLE_TYPES, "application/json", "application/octet-stream"),
                                SETTINGS.max_batch_bytes, "a CSV or Parquet table"),
    },
    api_token=SETTINGS.api_token, health=HEALTH, reason=HEALTH.recent_error,
)
