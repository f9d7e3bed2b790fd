"""The promotion pool's one slot is held by one step at a time, also when two runs claim it at
the same instant (a CI run saw gate_report of two trainings run at once: Dagster's claim reads
a free slot and then writes it without checking it is still free; SQLite ignores the
SELECT ... FOR UPDATE that is meant to guard it). Real SQLite event-log storage on a real
instance; the race is made deterministic by running the second claim inside the first one's
window, between its read and its write."""

from __future__ import annotations

import contextlib

import dagster as dg
import pytest

from mlops_assets.defs import patches

POOL = "promotion"


@pytest.fixture
def instances(tmp_path):
    """Two instances on one home: two processes' views of the same SQLite storage."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        with dg.DagsterInstance.from_ref(instance.get_ref()) as other:
            yield instance, other


def _claim_with_a_rival_inside_the_window(storage, rival_storage, rival: str):
    """Claim for run "a"; right after its read of a free slot, run `rival` claims in full
    through the other instance."""
    original = storage.index_connection
    fired = []

    @contextlib.contextmanager
    def connection():
        with original() as conn:
            execute = conn.execute

            def execute_then_rival(statement, *args, **kwargs):
                result = execute(statement, *args, **kwargs)
                if (not fired and getattr(statement, "is_select", False)
                        and "concurrency_slots" in str(statement)
                        and "FOR UPDATE" in str(statement).upper()):
                    fired.append(True)
                    rows = result.fetchall()
                    claimed = rival_storage.claim_concurrency_slot(POOL, rival, "gate_report")
                    assert claimed.is_claimed
                    return _Rows(rows)
                return result

            conn.execute = execute_then_rival
            yield conn

    storage.index_connection = connection
    try:
        return storage.claim_concurrency_slot(POOL, "a", "gate_report"), fired
    finally:
        storage.index_connection = original


class _Rows:
    def __init__(self, rows):
        self._rows = rows

    def fetchone(self):
        return self._rows[0] if self._rows else None


def _race(instances):
    storage, rival_storage = (i.event_log_storage for i in instances)
    # Both runs asked whether a slot was free before either queued its step, so both were
    # assigned one (has_unassigned_slots, then add_pending_step: two statements, no lock).
    for run_id in ("a", "b"):
        storage.add_pending_step(POOL, run_id, "gate_report", should_assign=True)
    claim, fired = _claim_with_a_rival_inside_the_window(storage, rival_storage, "b")
    assert fired, "the rival never ran inside the claim's window"
    return storage, claim


def test_the_code_location_applies_the_patch():
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    import mlops_assets.definitions  # noqa: F401  (what every run process imports)

    assert SqlEventLogStorage._claim_concurrency_slot is patches._claim_free_slot


def test_dagster_still_needs_the_patch(instances, monkeypatch):
    """Dagster's own method gives the one slot to both runs; once it no longer does, the patch
    (and this test) go."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    patches.guard_pool_claims()
    monkeypatch.setattr(SqlEventLogStorage, "_claim_concurrency_slot",
                        SqlEventLogStorage.original_claim_concurrency_slot)
    _, claim = _race(instances)
    assert claim.is_claimed  # "a" was told it holds the slot that "b" was told it holds


def test_two_claims_at_the_same_instant_get_one_slot(instances):
    assert patches.guard_pool_claims()
    storage, claim = _race(instances)
    holders = {s.run_id for s in storage.get_concurrency_info(POOL).claimed_slots}
    assert holders == {"b"}, holders
    assert not claim.is_claimed
    # The loser keeps its place: once the holder frees the slot, its next claim gets it.
    storage.free_concurrency_slot_for_step("b", "gate_report")
    assert storage.claim_concurrency_slot(POOL, "a", "gate_report").is_claimed
