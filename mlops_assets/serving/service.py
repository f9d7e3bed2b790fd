"""The champion as a BentoML service: ``bentoml serve`` in the repository root serves it.

POST /predict takes ``{"records": [...]}`` (1 to MLOPS_MAX_RECORDS records, validated by a
model generated from the dataset contract) and answers per record: probability, label at
the model's threshold, model version, variant and a request id. Both routes are plain ASGI
handlers in a FastAPI app mounted with ``@bentoml.asgi_app``: BentoML's own API path costs
about 0.4 ms per request more (README, Benchmarks), and FastAPI only documents them (the
OpenAPI schema at /docs.json). POST /predict_batch takes a
table (CSV or Parquet, up to MLOPS_MAX_BATCH_ROWS rows), validates it column by column with
the ingestion's Pandera domains and answers a table of the same format, one row per row;
each table is one Parquet file in the prediction log. The model is the registry's
champion (hot-swapped when the alias moves) or MLOPS_MODEL_TAG; a canary alias takes
MLOPS_CANARY_SHARE of the requests. Every answered prediction is in the prediction log.
Settings: see ``settings.py``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import inspect
import json
import logging
import time
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import bentoml
from fastapi import Body, FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mlops_assets.config import DatasetContract, load_contract
from mlops_assets.lib import features, scoring
from mlops_assets.lib.model import ServingModel
from mlops_assets.lib.predlog import PredictionLog
from mlops_assets.lib.registry import PRODUCTION, Registry
from mlops_assets.serving.inputs import ColumnReader, Prediction, record_model, request_model
from mlops_assets.serving.middleware import RequestGuard, Route
from mlops_assets.serving.runtime import ModelRuntime
from mlops_assets.serving.settings import ServingSettings

# A built Bento carries bundle.json (written by lib/bento.py): it serves the one model it
# was built with, from the Bento's own model store, and ignores the registry's aliases.
BUNDLE_FILE = Path(__file__).with_name("bundle.json")
BUNDLE = json.loads(BUNDLE_FILE.read_text()) if BUNDLE_FILE.is_file() else None
SETTINGS = ServingSettings.from_env()
logger = logging.getLogger("mlops_assets.serving")
CONTRACT = (DatasetContract.model_validate(BUNDLE["contract"]) if BUNDLE
            else load_contract(SETTINGS.contract))
Record = record_model(CONTRACT)
PredictRequest = request_model(CONTRACT, SETTINGS.max_records)
read_columns = ColumnReader(CONTRACT)


async def _timer_cancelling_timeout(self, scope, receive, send):
    """BentoML 1.4's ``TimeoutMiddleware.__call__`` (bentoml/_internal/server/http/
    traffic.py), with one change: the timer is cancelled when the request is done. BentoML's
    arms a ``loop.call_later`` per request and never cancels it, so every answered request
    leaves a timer handle, a future and a bound method alive for the whole traffic.timeout:
    at ~2,000 req/s and 30 s, ~60,000 of each, which the collector scans at every full
    collection (pauses growing to 40-150 ms under load: the concurrency-32 tail; README,
    Benchmarks). The timeout itself is unchanged: a 504 after traffic.timeout."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message):
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:  # what _set_timer_out sets (asyncio.TimeoutError)
        if fut.cancel():
            await JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504)(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def _patch_timeout_middleware() -> None:
    from bentoml._internal.server.http import traffic

    if bentoml.__version__.startswith("1.4."):  # the version whose middleware this mirrors
        traffic.TimeoutMiddleware.__call__ = _timer_cancelling_timeout


_patch_timeout_middleware()


def _error(status: HTTPStatus, message: str) -> JSONResponse:
    """A 5xx that says why (BentoML replaces the message of a raised 5xx with a generic one,
    so these are returned as responses)."""
    return JSONResponse({"error": message}, status_code=status)


class Health:
    """What /readyz says when there is no model to serve: the reason, not a bare 503."""

    runtime: ModelRuntime | None = None
    log: PredictionLog | None = None  # the service's, for the batch route

    def __call__(self) -> tuple[bool, str]:
        if self.runtime is None:
            return False, "the service is still starting"
        return self.runtime.ready, self.runtime.not_ready_reason


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


def _log_error(err: OSError) -> JSONResponse:
    status = (HTTPStatus.INSUFFICIENT_STORAGE if err.errno in (errno.ENOSPC, errno.EDQUOT)
              else HTTPStatus.SERVICE_UNAVAILABLE)
    return _error(status, f"prediction log {SETTINGS.prediction_log} cannot be written "
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


def _choose() -> tuple[tuple | None, Response | None]:
    """The request's (variant, model, shadow) from one snapshot, or the 503 saying why there
    is no model to answer with."""
    runtime = HEALTH.runtime
    variant, model, shadow = runtime.choose() if runtime else ("champion", None, None)
    if model is None:
        reason = runtime.not_ready_reason if runtime else "the service is still starting"
        return None, _error(HTTPStatus.SERVICE_UNAVAILABLE, reason)
    return (variant, model, shadow), None


def _score_table(body: bytes, fmt: str) -> Response:
    """The batch route's work, off the event loop: read, validate, predict, log, answer."""
    started = time.perf_counter()
    chosen, unavailable = _choose()
    if unavailable is not None:
        return unavailable
    variant, model, shadow = chosen
    log = HEALTH.log
    try:
        frame = scoring.validate(scoring.read_request_table(body, fmt, CONTRACT), CONTRACT,
                                 SETTINGS.max_batch_rows)
    except scoring.TableError as err:
        return JSONResponse(err.body(), status_code=err.status)
    matrix = scoring.matrix(frame, model.contract)
    probabilities = model.predict_matrix(matrix)
    answer = scoring.answer(probabilities, model.threshold, model.version, variant)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    shadowed = _shadow_scores(shadow, model, matrix,
                              {n: frame[n].to_numpy() for n in CONTRACT.features})
    logged = answer if shadowed is None else scoring.with_shadow(answer, shadowed, shadow)
    try:
        log.write_table(frame, logged, latency_ms)
    except OSError as err:  # nothing is answered that is not in the log
        return _log_error(err)
    PREDICTIONS.labels(model_version=model.version, variant=variant).inc(answer.num_rows)
    return Response(scoring.to_bytes(answer, fmt), media_type=scoring.MEDIA[fmt])


async def predict_batch(request: Request) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()  # the guard has checked its type and size
    return await run_in_threadpool(_score_table, body, scoring.FORMATS[media])


def _score_records(records: list) -> Response:
    """The single-record route's work: encode, predict, log, answer (on the event loop: it
    is about 0.2 ms for one record)."""
    started = time.perf_counter()
    chosen, unavailable = _choose()
    if unavailable is not None:
        return unavailable
    variant, model, shadow = chosen
    log = HEALTH.log
    columns = read_columns(records)
    matrix = features.encode(columns, model.contract)
    probabilities = model.predict_matrix(matrix).tolist()
    threshold = model.threshold
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    shadowed = _shadow_scores(shadow, model, matrix, columns)
    ts = time.time()
    out, rows = [], []
    score_metric = SCORES.labels(variant=variant)  # once: labels() costs a lookup
    for i, p in enumerate(probabilities):
        rid = uuid.uuid4().hex
        label = int(p >= threshold)
        out.append({"request_id": rid, "probability": p, "label": label,
                    "model_version": model.version, "variant": variant})
        row = {"ts": ts, "request_id": rid, "model_version": model.version,
               "variant": variant, "inputs": {c: v[i] for c, v in columns.items()},
               "probability": p, "label": label, "latency_ms": latency_ms}
        if shadowed is not None:
            row.update(shadow_version=shadow.version, shadow_probability=float(shadowed[i]),
                       shadow_label=int(shadowed[i] >= shadow.threshold))
        rows.append(row)
        score_metric.observe(p)
    try:
        log.write(rows)
    except OSError as err:  # nothing is answered that is not in the log
        return _log_error(err)
    PREDICTIONS.labels(model_version=model.version, variant=variant).inc(len(out))
    return Response(json.dumps(out), media_type="application/json")


async def predict(request: Request) -> Response:
    try:  # the guard has checked the token, type and size
        body = PredictRequest.model_validate_json(await request.body())
    except ValidationError as err:
        return JSONResponse({
            "error": f"{err.error_count()} validation error(s) in the request",
            "detail": err.errors(include_url=False, include_context=False, include_input=False),
        }, status_code=HTTPStatus.BAD_REQUEST)
    return _score_records(body.records)


class LeanRoute(APIRoute):
    """A route that FastAPI documents from ``signature`` (so the OpenAPI schema at /docs.json
    and the Swagger UI show its body, answer and errors) but that is served by the plain
    ``handler(request) -> Response``: no dependency solving and no response validation on the
    hot path. FastAPI's documented extension point for this is ``get_route_handler``."""

    def __init__(self, path: str, handler, signature: inspect.Signature, description: str,
                 **kwargs):
        self.handler = handler
        documented = functools.partial(handler)  # FastAPI reads its signature, never calls it
        documented.__signature__ = signature
        super().__init__(path, documented, methods=["POST"], name=handler.__name__,
                         description=description, **kwargs)

    def get_route_handler(self):
        return self.handler


_RECORDS = inspect.Parameter(
    "records", inspect.Parameter.KEYWORD_ONLY,
    annotation=Annotated[list[Record], Body(embed=True, min_length=1,
                                            max_length=SETTINGS.max_records)])
_ERRORS = {400: {"description": "a field, value or body that is not valid, named"},
           401: {"description": "missing or wrong bearer token"},
           413: {"description": "too many bytes or rows"},
           415: {"description": "unsupported content type"},
           503: {"description": "no model to serve yet, or the prediction log is unwritable"},
           507: {"description": "the prediction log's disk is full"}}
api = FastAPI(title="mlops_classifier", openapi_url=None, docs_url=None, redoc_url=None)
api.router.routes += [
    LeanRoute("/predict", predict,
              inspect.Signature([_RECORDS], return_annotation=list[Prediction]),
              "One probability, label, model version, variant and request id per record.",
              responses=_ERRORS),
    LeanRoute("/predict_batch", predict_batch, inspect.Signature(),
              "A CSV or Parquet table in, a table of the same format out, one row per row.",
              responses={
        **_ERRORS, 422: {"description": "cells that break the schema: row, column, value"}},
        response_class=Response, openapi_extra={"requestBody": {"required": True, "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in scoring.FORMATS}}}),
]


@bentoml.asgi_app(api, path="/")
@bentoml.service(
    name="mlops_classifier",
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 30},
    workers=1,
    # The predict routes are recorded per row in the prediction log; BentoML's access log
    # line and OpenTelemetry span per request add nothing to it and cost time on the hot path
    # (README, Benchmarks). Every other path keeps both.
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

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.runtime.stop()
        self.log.close()


Classifier.add_asgi_middleware(
    RequestGuard,
    routes={
        "/predict": Route(("application/json",), SETTINGS.max_body_bytes,
                          '{"records": [{...}, ...]}'),
        "/predict_batch": Route(tuple(scoring.FORMATS), SETTINGS.max_batch_bytes,
                                "a CSV or Parquet table"),
    },
    api_token=SETTINGS.api_token, health=HEALTH,
)
