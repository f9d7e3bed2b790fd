"""Faults in the model registry: rolling back twice, a truncated pointer file, a torn journal
line, a promotion decided against a champion that moved, and a Bento built after a rollback.
Real model versions in a real BentoML store; real jobs on a real instance."""

from __future__ import annotations

import dagster as dg
import pytest

from mlops_assets import orchestration
from mlops_assets.config import load_contract
from mlops_assets.defs.deployment.assets import bento
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib.governance.registry import Registry, RegistryError
from tests.helpers import tiny_models

BANK = load_contract("bank")


@pytest.fixture
def three(tmp_path) -> tuple[Registry, list[str]]:
    """Versions A, B, C promoted in turn: C is the champion."""
    home = tmp_path / "home"
    tags = tiny_models(home, BANK, 3)
    registry = Registry(home)
    for tag in tags:
        registry.promote(tag, "test")
    return registry, tags


def test_rollback_twice_walks_back_and_then_refuses(three):
    registry, (a, b, c) = three
    assert registry.rollback()["tag"] == b
    assert registry.rollback()["tag"] == a  # two versions back, not forth to c
    with pytest.raises(RegistryError, match="no earlier champion to roll back to"):
        registry.rollback()
    assert registry.champion() == a
    assert [h["action"] for h in registry.history()] == ["promote"] * 3 + ["rollback"] * 2
    # A promotion after rollbacks starts a new line from where the champion is.
    registry.promote(c, "re-promoted")
    assert registry.lineage() == [a, c] and registry.rollback()["tag"] == a


def test_a_truncated_snapshot_loses_nothing(three):
    registry, (a, b, c) = three
    history = registry.history()
    text = registry.state_file.read_text()
    registry.state_file.write_text(text[: len(text) // 2])  # "Unterminated string"
    fresh = Registry(registry.home)
    assert fresh.champion() == c and fresh.history() == history
    assert fresh.rollback()["tag"] == b
    assert Registry(registry.home).history()[:3] == history
    # The next write rewrote the snapshot whole.
    assert '"production": "' + b in registry.state_file.read_text().replace("\n", "")


def test_a_torn_journal_line_is_an_event_that_never_happened(three):
    registry, (a, b, c) = three
    with open(registry.journal_file, "a") as f:
        f.write('{"alias": "production", "tag": "' + a)  # a crash mid-append
    assert registry.champion() == c and len(registry.history()) == 3
    registry.promote(a, "after the crash")  # appends cleanly after the torn line
    assert registry.champion() == a and len(Registry(registry.home).history()) == 4


def test_no_journal_and_a_damaged_snapshot_names_the_file_and_the_fix(three):
    registry, _ = three
    registry.journal_file.unlink()
    registry.state_file.write_text('{"aliases": {"production": "ba')
    with pytest.raises(RegistryError) as err:
        registry.champion()
    assert str(registry.state_file) in str(err.value)
    assert "mlops-assets rollback --to <model tag>" in str(err.value)


def test_a_promotion_decided_against_a_moved_champion_is_refused(three):
    registry, (a, b, c) = three
    # Two gates both compared against c; the first promotes b, the second must not win.
    registry.promote(b, "first gate", expect=c)
    with pytest.raises(RegistryError, match=f"moved from {c} to {b}"):
        registry.promote(a, "second gate", expect=c)
    assert registry.champion() == b


def test_the_bento_after_a_rollback_packages_the_registry_champion(tmp_path, three):
    registry, (a, b, c) = three
    registry.rollback(reason="bad release")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [bento], instance=instance,
        resources={"project": ProjectResource(home=str(registry.home), contract_name="bank")},
    )
    meta = result.asset_materializations_for_node("bento")[0].metadata
    assert meta["model_tag"].value == b == registry.champion()


def test_rollback_job_and_cli_message(tmp_path, monkeypatch, three):
    registry, (a, b, c) = three
    from mlops_assets.definitions import build_definitions

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    orchestration.ensure_dagster_home(tmp_path / "dagster")
    defs = build_definitions(str(registry.home), "bank")
    with dg.DagsterInstance.get() as instance:
        for expected in (b, a):
            assert orchestration.run_job(defs, instance, "rollback", quiet=True).success
            assert registry.champion() == expected
        third = orchestration.run_job(defs, instance, "rollback", quiet=True,
                                      raise_on_error=False)
        assert not third.success
        assert "no earlier champion to roll back to" in orchestration.run_failure(
            instance, third.run_id)


def test_a_damaged_journal_line_is_named_never_served(three):
    registry, (a, b, c) = three
    lines = registry.journal_file.read_bytes().splitlines(keepends=True)
    # One byte changed in a middle line: still JSON, another tag. Found by its checksum.
    flipped = lines[1].replace(b.encode(), (b[:-1] + "x").encode())
    registry.journal_file.write_bytes(lines[0] + flipped + b"".join(lines[2:]))
    with pytest.raises(RegistryError, match=f"{registry.journal_file} line 2: damaged"):
        registry.champion()
    # The whole file replaced with random bytes: named, not "no champion".
    registry.journal_file.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RegistryError, match=f"{registry.journal_file} line 1: damaged"):
        registry.champion()
    # Put back, it serves again; a torn last line (a crash mid-append) is still skipped.
    registry.journal_file.write_bytes(b"".join(lines) + b'{"alias": "production", "ta')
    assert registry.champion() == c


@pytest.mark.parametrize(("damage", "expected"), [
    ("{not json", "is damaged: Expecting property name"),
    ('{"method": "platt", "params": {"slope": -1.2, "intercept": 0.1}, "rows": 400, '
     '"positive_rate": 0.1}', "platt slope -1.2 is not positive"),
    ('{"method": "platt", "params": {"slope": NaN, "intercept": 0.1}, "rows": 400, '
     '"positive_rate": 0.1}', "must be finite numbers"),
    ('{"method": "isotonic", "params": {"x": [0, 1], "y": [0.9, 0.1]}, "rows": 400, '
     '"positive_rate": 0.1}', "isotonic steps must increase"),
    ('[1, 2]', "expected an object"),
], ids=["not-json", "negated-slope", "nan", "decreasing", "a-list"])
def test_a_damaged_calibrator_names_its_file_and_version(three, damage, expected):
    from mlops_assets.lib.training import calibration

    registry, (a, b, c) = three
    rng = __import__("numpy").random.default_rng(0)
    p = rng.uniform(size=500)
    cal = calibration.fit(p, (rng.uniform(size=500) < p).astype(int), "platt", "test")
    tag = registry.save_recalibrated(a, cal, 0.5, {})
    assert registry.load(tag).calibrator.params["slope"] > 0
    path = __import__("pathlib").Path(registry.get(tag).path) / "calibrator.json"
    path.write_text(damage)
    with pytest.raises(ValueError) as err:
        registry.load(tag)
    assert str(path) in str(err.value) and tag in str(err.value)
    assert expected in str(err.value)
