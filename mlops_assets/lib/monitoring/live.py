"""Monitoring over the prediction log: windows, live metrics once labels arrive, serving
health. Dagster-free; the monitoring assets call these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.config import TARGET, DatasetContract
from mlops_assets.lib import evaluation, io
from mlops_assets.lib.dataset import features
from mlops_assets.lib.monitoring.drift import PREDICTION
from mlops_assets.lib.serving import predlog

# --- windows: named time ranges over the prediction log -------------------------------------


@dataclass(frozen=True)
class Window:
    name: str
    start: float  # unix seconds, inclusive
    end: float  # exclusive

    def closed(self, now: float) -> bool:
        return self.end <= now


def write_window(folder: Path, name: str, start: float, end: float) -> Path:
    if end <= start:
        raise ValueError(f"window {name!r}: end {end} is not after start {start}")
    return io.write_json(Path(folder) / f"{name}.json", {"start": start, "end": end})


def read_windows(folder: Path) -> dict[str, Window]:
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        spec = io.read_json(path)
        out[path.stem] = Window(path.stem, float(spec["start"]), float(spec["end"]))
    return out


def day_window(day: str) -> Window:
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    return Window(day, start, start + 86400)


def window_days(window: Window) -> tuple[str, str]:
    """The first and last UTC day (YYYY-MM-DD) a window touches."""
    first = datetime.fromtimestamp(window.start, UTC).date()
    last = datetime.fromtimestamp(max(window.start, window.end - 1e-6), UTC).date()
    return first.isoformat(), last.isoformat()


def window_rows(days: Mapping[str, pd.DataFrame], window: Window) -> pd.DataFrame:
    """The logged predictions (``days``: flattened prediction-log days by date, read on
    access) with ``start <= ts < end``."""
    first, last = window_days(window)
    frames = [days[d] for d in sorted(days) if first <= d <= last]
    if not frames:
        return flatten(pd.DataFrame(columns=list(predlog.FIELDS)))
    rows = pd.concat(frames, ignore_index=True)
    return rows[(rows["ts"] >= window.start) & (rows["ts"] < window.end)].reset_index(drop=True)


def shadow_agreement(rows: pd.DataFrame) -> pd.DataFrame:
    """How the shadow model agreed with the model that answered, per (answering version,
    shadow version), over the rows both scored: Spearman rank correlation, the share of
    labels that flip, and the score shift (mean and mean absolute, shadow minus answered)."""
    columns = ["model_version", "shadow_version", "rows", "rank_correlation", "label_flips",
               "score_shift", "mean_abs_shift"]
    if "shadow_probability" not in rows or rows["shadow_probability"].isna().all():
        return pd.DataFrame(columns=columns)
    both = rows[rows["shadow_probability"].notna()]
    out = []
    for (version, shadow), part in both.groupby(["model_version", "shadow_version"]):
        served = part["probability"].astype(float)
        shadowed = part["shadow_probability"].astype(float)
        diff = shadowed - served
        out.append({
            "model_version": version, "shadow_version": shadow, "rows": len(part),
            "rank_correlation": float(served.corr(shadowed, method="spearman"))
            if len(part) > 1 else float("nan"),
            "label_flips": float((part["label"].astype(int)
                                  != part["shadow_label"].astype(int)).mean()),
            "score_shift": float(diff.mean()), "mean_abs_shift": float(diff.abs().mean()),
        })
    return pd.DataFrame(out, columns=columns)


def flatten(rows: pd.DataFrame) -> pd.DataFrame:
    inputs = pd.DataFrame(rows["inputs"].tolist(), index=rows.index) if len(rows) else None
    out = rows.drop(columns=["inputs"])
    return out if inputs is None else pd.concat([out, inputs], axis=1)


def current_features(rows: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """Logged inputs through the same feature function as training, plus the prediction."""
    if rows.empty:
        frame = features.to_frame(np.empty((0, len(contract.features))), contract)
    else:
        frame = features.build_features(rows, contract)
    frame[PREDICTION] = rows["probability"].to_numpy(float) if len(rows) else []
    return frame


# --- delayed labels -------------------------------------------------------------------------


class FeedbackError(ValueError):
    pass


def no_feedback() -> pd.DataFrame:
    """The labels before any label file arrived."""
    return pd.DataFrame({"request_id": [], TARGET: [], "file": []})


def read_feedback(folder: Path, contract: DatasetContract) -> pd.DataFrame:
    """Label files ``<folder>/*.csv``: an id column and the target column (the contract's
    labels, or 0/1). The id is ``request_id`` for served predictions, or the contract's key
    column for rows whose labels arrive apart; either is returned as ``request_id``. Bad
    files or labels raise naming the file and the value."""
    mapping = contract.label_codes | {"1": 1, "0": 0}
    frames = []
    for path in sorted(Path(folder).glob("*.csv")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        ids = [c for c in ("request_id", contract.key_column) if c and c in df.columns]
        if not ids or contract.target.column not in df.columns:
            need = "request_id" + (f" or {contract.key_column}" if contract.key_column else "")
            raise FeedbackError(f"feedback file {path} needs columns {need} and "
                                f"{contract.target.column}; it has {list(df.columns)[:10]}")
        df = df.rename(columns={ids[0]: "request_id"})
        labels = df[contract.target.column].str.strip().map(mapping)
        bad = df.loc[labels.isna(), contract.target.column]
        if len(bad):
            raise FeedbackError(
                f"feedback file {path}: unknown label {bad.iloc[0]!r} in column "
                f"{contract.target.column!r} (row {bad.index[0] + 2})"
            )
        frames.append(pd.DataFrame({"request_id": df["request_id"], TARGET: labels.astype(int),
                                    "file": path.name}))
    if not frames:
        return no_feedback()
    out = pd.concat(frames, ignore_index=True)
    return out.drop_duplicates("request_id", keep="last").reset_index(drop=True)


def labelled(rows: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The window's predictions that have a delayed label (joined by request id)."""
    return rows.merge(labels[["request_id", TARGET]], on="request_id", how="inner")


def live_metrics(rows: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Metrics on the window's predictions that have a label (joined by request id)."""
    joined = labelled(rows, labels)
    base = {"volume": int(len(rows)), "labelled": int(len(joined))}
    if joined.empty:
        return base | {"verdict": "no labels yet for this window"}
    y = joined[TARGET].to_numpy(int)
    p = joined["probability"].to_numpy(float)
    pred = joined["label"].to_numpy(int)
    # Decisions as the service returned them, at its model's own threshold.
    decisions = evaluation.decision_metrics(y, pred)
    m = {
        "roc_auc": evaluation._fast_auc(y, p),
        "log_loss": evaluation.metrics(y, p, 0.5)["log_loss"],
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(pred.mean()),
        "mean_prediction": float(p.mean()),
        "calibration_gap": float(y.mean() - p.mean()),
        **decisions,
    }
    single = len(np.unique(y)) < 2
    verdict = "single class in the labels: AUC undefined" if single else "ok"
    return base | m | {"verdict": verdict}


# --- serving health ---------------------------------------------------------------------------


def serving_health(rows: pd.DataFrame, reference: pd.DataFrame,
                   contract: DatasetContract) -> tuple[dict, pd.DataFrame]:
    """Missing inputs per feature, non-null outputs, values outside the training range,
    latency percentiles."""
    per_feature = []
    for name in contract.features:
        col = rows[name] if name in rows else pd.Series(dtype=object)
        row = {"feature": name, "missing_fraction": float(col.isna().mean()) if len(col) else 0.0}
        if name in contract.numeric and len(col):
            values = pd.to_numeric(col, errors="coerce")
            lo, hi = reference[name].min(), reference[name].max()
            row["outside_training_range"] = int(((values < lo) | (values > hi)).sum())
        per_feature.append(row)
    table = pd.DataFrame(per_feature)
    if rows.empty:
        return {"volume": 0, "verdict": "empty window"}, table
    latency = rows["latency_ms"].to_numpy(float)
    outputs = rows["probability"]
    summary = {
        "volume": int(len(rows)),
        "non_null_output_fraction": float(outputs.notna().mean()),
        "outside_training_range": int(table.get("outside_training_range", pd.Series()).sum()),
        "max_missing_fraction": float(table["missing_fraction"].max()),
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p95_ms": float(np.percentile(latency, 95)),
        "latency_p99_ms": float(np.percentile(latency, 99)),
        "verdict": "ok",
    }
    return summary, table


def fingerprint(folder: Path, pattern: str) -> str:
    """Changes whenever a matching file is added, removed or changed: names and identities
    (``io.file_identity``; sizes alone missed a label corrected in place)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(Path(folder).glob(pattern)):
        h.update(f"{path.relative_to(folder)}:{io.file_identity(path)};".encode())
    return h.hexdigest()[:16]


def log_day_sizes(log_root: Path) -> dict[str, int]:
    """Total bytes logged per day."""
    return {
        day: sum(p.stat().st_size for pattern in predlog.file_patterns()
                 for p in (Path(log_root) / f"date={day}").glob(pattern))
        for day in predlog.partitions(log_root)
    }
