"""The one change this project makes to Dagster's internals: a pool slot is claimed only if it
is still free.

Dagster 1.13's ``SqlEventLogStorage._claim_concurrency_slot`` reads a free slot of the pool
(``SELECT ... FOR UPDATE SKIP LOCKED``) and then writes the claim with
``UPDATE ... WHERE id = <slot>``. SQLite ignores ``FOR UPDATE`` and PostgreSQL's
``index_connection`` runs each statement on its own, so nothing holds the slot between the
two: two runs whose steps were both assigned (each asked ``has_unassigned_slots`` before the
other queued its step) both read the one free slot, both write it, and both are told they
hold it. A CI run saw the promotion pool's ``gate_report`` of two trainings run at once.

``_claim_free_slot`` is Dagster's method with the write made conditional
(``AND step_key IS NULL``): one write wins; the other changes no row, so its claim is
BLOCKED, the step stays assigned and claims again once the slot is freed, which is what the
method's own comment says the rows are for ("using the slot rows as a semaphore").
``tests/unit/test_pool_claim.py`` reproduces the race deterministically on real SQLite
storage.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as db
from dagster._core.storage.event_log import sql_event_log
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._utils.concurrency import ConcurrencySlotStatus

PATCHED_VERSIONS = ("1.13.",)  # the versions whose method _claim_free_slot mirrors


def _claim_free_slot(self, concurrency_key: str, run_id: str, step_key: str):
    free = db.and_(ConcurrencySlotsTable.c.concurrency_key == concurrency_key,
                   ConcurrencySlotsTable.c.step_key == None,  # noqa: E711
                   ConcurrencySlotsTable.c.deleted == False)  # noqa: E712
    with self.index_connection() as conn:
        row = conn.execute(
            db_select([ConcurrencySlotsTable.c.id]).select_from(ConcurrencySlotsTable)
            .where(free).with_for_update(skip_locked=True).limit(1)).fetchone()
        if not row or not row[0]:
            return ConcurrencySlotStatus.BLOCKED
        claimed = conn.execute(
            ConcurrencySlotsTable.update().values(run_id=run_id, step_key=step_key)
            .where(db.and_(ConcurrencySlotsTable.c.id == row[0], free))).rowcount
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED


def guard_pool_claims() -> bool:
    """Apply the fix if this Dagster is one it was made for; True if applied."""
    if not dg.__version__.startswith(PATCHED_VERSIONS):
        return False
    storage = sql_event_log.SqlEventLogStorage
    if storage._claim_concurrency_slot is not _claim_free_slot:  # noqa: SLF001
        storage.original_claim_concurrency_slot = storage._claim_concurrency_slot  # noqa: SLF001
        storage._claim_concurrency_slot = _claim_free_slot  # noqa: SLF001
    return True
