"""The same predict as the BentoML service on a bare Starlette app under uvicorn: the
reference for what the framework costs. Run: python -m benchmarks.bare_app PORT."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops_assets.config import default_home, load_contract
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.lib.serving.predlog import PredictionLog
from mlops_assets.serving.inputs import ColumnReader, request_model

CONTRACT = load_contract(os.environ.get("MLOPS_CONTRACT", "bank"))
Input = request_model(CONTRACT, int(os.environ.get("MLOPS_MAX_RECORDS", "1000")))
read_columns = ColumnReader(CONTRACT)
registry = Registry(default_home())
MODEL = registry.load(registry.champion())
LOG = PredictionLog(default_home() / "predictions-bare")


async def predict(request: Request) -> Response:
    started = time.perf_counter()
    records = Input.model_validate_json(await request.body()).records
    columns = read_columns(records)
    probabilities = MODEL.predict_columns(columns).tolist()
    latency_ms = (time.perf_counter() - started) * 1000
    out, rows, ts = [], [], time.time()
    for i, p in enumerate(probabilities):
        rid = uuid.uuid4().hex
        label = int(p >= MODEL.threshold)
        out.append({"request_id": rid, "probability": p, "label": label,
                    "model_version": MODEL.version, "variant": "champion"})
        rows.append({"ts": ts, "request_id": rid, "model_version": MODEL.version,
                     "variant": "champion", "inputs": {c: v[i] for c, v in columns.items()},
                     "probability": p, "label": label, "latency_ms": latency_ms})
    LOG.write(rows)
    return Response(json.dumps(out), media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                        Route("/readyz", lambda r: Response("ok"))])

if __name__ == "__main__":
    import gc

    import uvicorn

    gc.collect()
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
