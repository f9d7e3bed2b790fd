"""Build an immutable Bento holding one model version and the serving code, and validate it
as it will run: started by ``bentoml serve`` in a child process, it must answer sealed test
rows with the offline probabilities before its model may become the champion (TFX's
InfraValidator is the model for this)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mlops_assets.config import PROJECT_ROOT, DatasetContract
from mlops_assets.lib import io

INDEX = "bentos.json"  # under <home>/bentoml: model tag -> the tag of its (validated) Bento


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    size_bytes: int
    seconds: float


def _build_dir(home: Path) -> Path:
    folder = Path(home) / "bento_build"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_bento(home: Path, model_tag: str, contract: DatasetContract,
                timeout_s: float = 600) -> BuiltBento:
    """Stage the files ``bentofile.yaml`` includes plus a bundle manifest naming the model and
    holding its whole contract (a contract given by path is not in the package), and run
    ``bentoml build`` there with BENTOML_HOME=<home>/bentoml (the registry's store)."""
    import time

    started = time.perf_counter()
    bentoml_home = Path(home) / "bentoml"
    # A fresh folder per build: two builds at once (even of one model) never share files.
    stage = Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.-]", "-", model_tag) + ".",
                                  dir=_build_dir(home)))
    spec = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    for pattern in spec["include"]:
        for src in PROJECT_ROOT.glob(pattern):
            if src.is_file() and "__pycache__" not in src.parts:
                dst = stage / src.relative_to(PROJECT_ROOT)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    shutil.copy2(PROJECT_ROOT / "bentofile.yaml", stage / "bentofile.yaml")
    shutil.copy2(PROJECT_ROOT / "requirements-serving.txt", stage / "requirements-serving.txt")
    manifest = {"model_tag": model_tag, "contract": contract.model_dump(mode="json")}
    (stage / "mlops_assets" / "serving" / "bundle.json").write_text(json.dumps(manifest))
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "true"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"],
            cwd=stage, env=env, capture_output=True, text=True, timeout=timeout_s,
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"bentoml build failed for {model_tag}:\n{done.stderr[-4000:]}")
    match = re.search(r"__tag__:(\S+)", done.stdout) or re.search(r"(\S+:\w+)\s*$", done.stdout)
    if not match:
        raise RuntimeError(f"bentoml build printed no tag:\n{done.stdout[-2000:]}")
    tag = match.group(1)
    name, version = tag.split(":")
    path = bentoml_home / "bentos" / name / version
    return BuiltBento(tag, path, _dir_size(path), time.perf_counter() - started)


def bento_path(home: Path, bento_tag: str) -> Path:
    name, version = bento_tag.split(":")
    return Path(home) / "bentoml" / "bentos" / name / version


def _index(home: Path) -> dict:
    """The model -> Bento index; a damaged one is an empty one (it only saves rebuilds: a
    champion without a recorded Bento gets one built), said in the log."""
    index = Path(home) / "bentoml" / INDEX
    if not index.is_file():
        return {}
    try:
        known = io.read_json(index)
        if isinstance(known, dict):
            return known
    except ValueError:
        pass
    logging.getLogger(__name__).warning("%s is damaged: read as empty", index)
    return {}


def record_bento(home: Path, model_tag: str, bento_tag: str) -> None:
    """Remember ``bento_tag`` as the Bento of ``model_tag`` (atomically; later wins)."""
    io.write_json(Path(home) / "bentoml" / INDEX, {**_index(home), model_tag: bento_tag})


def bento_of(home: Path, model_tag: str) -> str | None:
    """The recorded Bento of ``model_tag``, if it is still in the store."""
    tag = _index(home).get(model_tag)
    return tag if isinstance(tag, str) and ":" in tag and bento_path(home, tag).is_dir() \
        else None


@dataclass(frozen=True)
class Validation:
    """What the served Bento answered: passed, why (a sentence naming what failed), and the
    numbers (seconds until ready, rows compared, the largest difference)."""

    passed: bool
    why: str
    ready_seconds: float | None = None
    rows: int = 0
    max_abs_diff: float | None = None


def validate_bento(home: Path, bento_tag: str, records: list[dict], expected: np.ndarray,
                   ready_timeout_s: float = 120.0, tolerance: float = 1e-9,
                   single_rows: int = 5) -> Validation:
    """Start ``bentoml serve <bento_tag>`` (the store under ``<home>/bentoml``) on a free
    port of 127.0.0.1 in a child process, wait for /readyz at most ``ready_timeout_s``, send
    ``single_rows`` of ``records`` one by one to /predict and all of them as a Parquet table
    to /predict_batch, and compare every answer with ``expected`` (the offline
    probabilities). The server is stopped by its PID; its prediction log is thrown away."""
    import time
    import urllib.error
    import urllib.request

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_assets.lib.serving.scoring import MEDIA, to_bytes
    from mlops_assets.platform.procs import free_port, release_port, server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="deploy-check.", dir=_build_dir(home)))
    log = work / "serve.log"
    env = {**os.environ, "BENTOML_HOME": str(Path(home) / "bentoml"),
           "MLOPS_HOME": str(work / "home"), "BENTOML_DO_NOT_TRACK": "true",
           "MLOPS_MAX_BATCH_ROWS": str(max(len(records), 1))}
    env.pop("MLOPS_API_TOKEN", None)  # the check's own server, reachable only here
    cmd = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", "127.0.0.1",
           "--port", str(port)]

    def post(path: str, body: bytes, media: str) -> tuple[int, bytes]:
        request = urllib.request.Request(url + path, data=body,
                                         headers={"Content-Type": media})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    started = time.perf_counter()
    answers: list[tuple[str, np.ndarray]] = []
    try:
        # A run killed during the check takes the server with it (die_with_parent).
        with server(cmd, f"{url}/readyz", log, env, work, timeout=ready_timeout_s,
                    die_with_parent=True):
            ready = time.perf_counter() - started
            singles = []
            for record in records[:single_rows]:
                status, body = post("/predict", json.dumps({"records": [record]}).encode(),
                                    "application/json")
                if status != 200:
                    return Validation(False, f"/predict answered {status} for a sealed test "
                                      f"row: {body[:300].decode(errors='replace')}", ready)
                singles.append(json.loads(body)[0]["probability"])
            answers.append(("/predict", np.array(singles)))
            table = to_bytes(pd.DataFrame(records), "parquet")
            status, body = post("/predict_batch", table, MEDIA["parquet"])
            if status != 200:
                return Validation(False, f"/predict_batch answered {status} for "
                                  f"{len(records)} sealed test rows: "
                                  f"{body[:300].decode(errors='replace')}", ready)
            answered = pq.read_table(pa.BufferReader(body))
            answers.append(("/predict_batch", answered["probability"].to_numpy()))
    except (TimeoutError, RuntimeError) as err:  # procs.wait_http: not ready, or exited
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b", line)]
        said = [line for line in lines if line.startswith("Error:")]  # bentoml's own line
        import_failed = [line for line in lines if "import bento by tag" in line]  # and why
        why = " | ".join(raised[-1:] + said[-1:] + import_failed[-1:]) or " | ".join(lines[-4:])
        what = ("exited before it was ready" if isinstance(err, RuntimeError)
                else f"did not become ready within {ready_timeout_s:g} s")
        return Validation(False, f"bentoml serve {bento_tag} {what}: {why[-800:]}")
    finally:
        release_port(port)
        shutil.rmtree(work, ignore_errors=True)
    worst = 0.0
    for route, got in answers:
        want = expected[:len(got)]
        diff = np.abs(got - want)
        if not np.all(np.isfinite(got)) or diff.max() > tolerance:
            i = int(np.nanargmax(np.where(np.isfinite(diff), diff, np.inf)))
            return Validation(False, f"{route} answered {got[i]!r} for sealed test row {i}, "
                              f"offline {want[i]!r} (difference {diff[i]:.3g} > {tolerance:g})",
                              ready, len(records), float(diff.max()))
        worst = max(worst, float(diff.max()))
    return Validation(True, f"bentoml serve {bento_tag} was ready in {ready:.1f} s and "
                      f"answered {min(single_rows, len(records))} single rows and a "
                      f"{len(records)}-row table with the offline probabilities (largest "
                      f"difference {worst:.2g} <= {tolerance:g})", ready, len(records), worst)
