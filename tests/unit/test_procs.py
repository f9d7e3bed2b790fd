"""The environment handed to children a library starts: set for the duration, then restored."""

from __future__ import annotations

import os

import pytest

from mlops_assets.platform.procs import children_environment


def test_children_environment_sets_then_restores_even_on_error(monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_KEPT", "before")
    monkeypatch.delenv("MLOPS_TEST_NEW", raising=False)
    with pytest.raises(RuntimeError), children_environment(
            {"MLOPS_TEST_KEPT": "during", "MLOPS_TEST_NEW": "during"}):
        assert os.environ["MLOPS_TEST_KEPT"] == os.environ["MLOPS_TEST_NEW"] == "during"
        raise RuntimeError
    assert os.environ["MLOPS_TEST_KEPT"] == "before"
    assert "MLOPS_TEST_NEW" not in os.environ
