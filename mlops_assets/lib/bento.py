"""Build an immutable Bento holding one model version and the serving code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlops_assets.config import PROJECT_ROOT, DatasetContract


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    size_bytes: int
    seconds: float


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
    (Path(home) / "bento_build").mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.-]", "-", model_tag) + ".",
                                  dir=Path(home) / "bento_build"))
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
