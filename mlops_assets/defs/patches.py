"""The two changes this project makes to Dagster's internals: a pool slot is claimed only if
it is still free, and a code server forks its runs from a process that has the code loaded.

1. Pool claims.

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

2. Run processes. A code server (``dagster api grpc``: the daemon's, the UI's, the CLI's)
starts every run it is asked to launch (``DagsterApiServer.StartRun``) as a new process of
multiprocessing's "spawn" kind: a fresh interpreter that imports Dagster and this code
location again (2-3 s here) before the run's first step, and then LightGBM (1.5 s) and
Evidently (4-5 s) in the steps that use them. ``fork_runs_from_preloaded_server`` gives the
server multiprocessing's "forkserver" kind instead, with those modules preloaded: a server
process started once per code server, single-threaded, that imports them and forks a run
process per request (the same target, arguments and queues; Dagster's own multiprocess
executor offers the same for step processes, ``start_method: forkserver``). The forkserver
is started as the code server loads the code, so its imports overlap the server's start.
It exits with the code server; one killed is started again by the next launch (multiprocessing
checks it is alive). A preload that fails to import is skipped (the run imports it itself).
``tests/faults/test_runs.py::test_a_run_killed_inside_the_promotion_pool_does_not_hold_it``
asserts that a run launched through a code server is a child of its forkserver, which
preloaded these modules.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys

import dagster as dg
import sqlalchemy as db
from dagster._core.storage.event_log import sql_event_log
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._grpc import server as grpc_server
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


# What a run process finds loaded: the code location, and the heavy libraries its steps import.
PRELOADED = ("mlops_assets.definitions", "lightgbm", "evidently")
# A code server started with this set preloads those modules instead (comma-separated): a
# command that runs one small job (a rollback) would wait ~6 s for LightGBM and Evidently.
PRELOAD_ENV = "MLOPS_RUN_PRELOAD"


def _start_run_forked(self, request, context):
    """``DagsterApiServer.StartRun`` with the server's process context set to the forkserver."""
    if self._mp_ctx.get_start_method() != "forkserver":  # noqa: SLF001
        self._mp_ctx = _forkserver_context()  # noqa: SLF001
    return grpc_server.DagsterApiServer.original_start_run(self, request, context)


def _forkserver_context():
    context = multiprocessing.get_context("forkserver")
    preload = os.environ.get(PRELOAD_ENV)
    context.set_forkserver_preload(preload.split(",") if preload else list(PRELOADED))
    return context


def in_code_server() -> bool:
    """Is this process a Dagster code server (``python -m dagster api grpc ...``)?"""
    return sys.argv[1:3] == ["api", "grpc"]


def fork_runs_from_preloaded_server() -> bool:
    """Apply change 2 if this Dagster is one it was made for (True if applied); in a code
    server, start the forkserver now, so that its imports overlap the server's own start."""
    if not dg.__version__.startswith(PATCHED_VERSIONS):
        return False
    server = grpc_server.DagsterApiServer
    if server.StartRun is not _start_run_forked:
        server.original_start_run = server.StartRun
        server.StartRun = _start_run_forked
    if in_code_server():
        _forkserver_context()
        multiprocessing.forkserver.ensure_running()
    return True
