"""Serving settings, from environment variables (how ``bentoml serve`` is configured)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.config import default_home


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw not in (None, "") else default
    except ValueError as err:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from err


@dataclass(frozen=True)
class ServingSettings:
    """| variable | meaning | default |
    |---|---|---|
    | MLOPS_HOME | project home (registry, prediction log) | ./var |
    | MLOPS_CONTRACT | dataset contract of the request schema | bank |
    | MLOPS_MODEL_TAG | serve this model version, ignore the aliases | (champion) |
    | MLOPS_RELOAD_SECONDS | how often to look for a new champion / canary | 2 |
    | MLOPS_CANARY_SHARE | share of requests answered by the canary, if one is set | 0.1 |
    | MLOPS_SHADOW_SHARE | share of requests also scored by the shadow, if one is set | 1.0 |
    | MLOPS_MAX_RECORDS | records per request | 1000 |
    | MLOPS_MAX_BODY_BYTES | request body limit (413 beyond) | 2097152 |
    | MLOPS_MAX_BATCH_ROWS | rows per /predict_batch table | 100000 |
    | MLOPS_MAX_BATCH_BYTES | /predict_batch body limit (413 beyond) | 67108864 |
    | MLOPS_API_TOKEN | if set, both predict routes need `Authorization: Bearer <token>` | - |
    | MLOPS_ADAPTIVE_BATCHING | 1: /predict batches concurrent requests; 0: one by one | 1 |
    | MLOPS_MAX_LATENCY_MS | a /predict request waiting longer for its batch is a 503 | 1000 |
    """

    home: Path
    contract: str
    model_tag: str | None
    reload_seconds: float
    canary_share: float
    shadow_share: float
    max_records: int
    max_body_bytes: int
    max_batch_rows: int
    max_batch_bytes: int
    api_token: str | None
    adaptive_batching: bool = True
    max_latency_ms: int = 1000

    @classmethod
    def from_env(cls) -> ServingSettings:
        share = _float("MLOPS_CANARY_SHARE", 0.1)
        shadow_share = _float("MLOPS_SHADOW_SHARE", 1.0)
        for name, value in (("MLOPS_CANARY_SHARE", share), ("MLOPS_SHADOW_SHARE", shadow_share)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        return cls(
            home=default_home(),
            contract=os.environ.get("MLOPS_CONTRACT", "bank"),
            model_tag=os.environ.get("MLOPS_MODEL_TAG") or None,
            reload_seconds=_float("MLOPS_RELOAD_SECONDS", 2.0),
            canary_share=share,
            shadow_share=shadow_share,
            max_records=int(_float("MLOPS_MAX_RECORDS", 1000)),
            max_body_bytes=int(_float("MLOPS_MAX_BODY_BYTES", 2 * 1024 * 1024)),
            max_batch_rows=int(_float("MLOPS_MAX_BATCH_ROWS", 100_000)),
            max_batch_bytes=int(_float("MLOPS_MAX_BATCH_BYTES", 64 * 1024 * 1024)),
            api_token=os.environ.get("MLOPS_API_TOKEN") or None,
            adaptive_batching=_float("MLOPS_ADAPTIVE_BATCHING", 1) != 0,
            max_latency_ms=int(_float("MLOPS_MAX_LATENCY_MS", 1000)),
        )

    @property
    def prediction_log(self) -> Path:
        return self.home / "predictions"
