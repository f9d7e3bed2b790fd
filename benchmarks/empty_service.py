"""BentoML's own ceiling: a ``@bentoml.api`` endpoint that does nothing, configured as the
service is (one worker, the same traffic timeout, access log and tracing skipped on the
route, the answer's media type named, the timer-leak fix), answering every record with a
constant. No model, no validation of the records' fields, no prediction log: what remains
is BentoML's request path (uvicorn, its middleware, routing, IO models). No service inside
BentoML's API can be faster than this on the same machine.
Run: bentoml serve benchmarks.empty_service:Empty --port PORT."""

from __future__ import annotations

import bentoml

from mlops_assets.serving.patches import patch_timeout_middleware

patch_timeout_middleware()


@bentoml.service(
    name="empty_ceiling",
    traffic={"timeout": 30},
    workers=1,
    logging={"access": {"skip_paths": ["/predict"]}},
    tracing={"excluded_urls": ["/predict"]},
)
class Empty:
    @bentoml.api(route="/predict")
    async def predict(self, records: list[dict]) -> list[dict]:
        return [{"probability": 0.5, "label": 0} for _ in records]


Empty.apis["predict"].output_spec.media_type = "application/json"
