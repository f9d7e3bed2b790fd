"""The README's main command on the bundled data: 12 Bank periods end with a champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets.config import PROJECT_ROOT
from mlops_assets.lib.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "mlops-assets"
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.run([str(exe), "--home", str(home), *args], capture_output=True,
                          text=True, env=env, cwd=PROJECT_ROOT, timeout=600)


def test_demo_on_12_bank_periods_promotes_a_champion(tmp_path):
    home = tmp_path / "home"
    done = _cli(home, "demo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "landed 12 batches" in done.stdout and "ingested 12 batches (0 failed)" in done.stdout
    champion = Registry(home).champion()
    assert champion and f"champion: {champion}" in done.stdout
    evaluation = json.loads(
        (home / "reports" / "evaluation" / champion.replace(":", "-") / "evaluation.json")
        .read_text()
    )
    assert evaluation["metrics"]["rows"] > 5000
    assert evaluation["metrics"]["roc_auc"] >= 0.72  # issue acceptance on 12 periods
    assert (home / "reports" / "model_cards" / f"{champion.replace(':', '-')}.md").is_file()
    # One champion only: rolling back has nowhere to go, and says so.
    rollback = _cli(home, "rollback")
    assert rollback.returncode == 1
    assert "rollback failed: rollback_champion: mlops_assets.lib.registry.RegistryError: " \
        "no earlier champion to roll back to" in rollback.stderr
    assert Registry(home).champion() == champion
