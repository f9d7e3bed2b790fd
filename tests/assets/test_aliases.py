"""The jobs that move the serving aliases (set_canary, set_shadow), as the UI and the CLI run
them, on a real instance."""

from __future__ import annotations

import pytest

from mlops_assets import orchestration
from mlops_assets.lib.governance.registry import CANARY, SHADOW
from tests.conftest import make_project
from tests.serving.conftest import train_two_models


@pytest.mark.parametrize("alias", [CANARY, SHADOW])
def test_alias_jobs_set_and_clear_their_alias_only(tmp_path, monkeypatch, bank_batches, alias):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    project = make_project(tmp_path)
    champion, other, _ = train_two_models(project.home, bank_batches)

    def run(tag):
        return orchestration.run_job(
            project.defs, project.instance, f"set_{alias}", raise_on_error=False,
            run_config={"ops": {f"set_{alias}_alias": {"config": {"tag": tag,
                                                                   "reason": "test"}}}})

    assert run(other).success
    registry = project.registry()
    assert registry.alias(alias) == other and registry.champion() == champion
    assert registry.history(alias)[-1]["action"] == alias
    unknown = run("bank-classifier:nosuchversion")
    assert not unknown.success and registry.alias(alias) == other  # nothing moved
    assert run(None).success
    assert registry.alias(alias) is None and registry.champion() == champion
