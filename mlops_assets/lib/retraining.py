"""When to retrain: a failed drift or live-performance check, or enough new labelled rows,
subject to a cooldown; one cause, one run. Pure logic; the Dagster sensor feeds it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrainPolicy:
    cooldown_s: float = 3600.0
    min_new_rows: int = 5000


@dataclass(frozen=True)
class FailedCheck:
    record_id: int
    check: str
    window: str | None
    description: str


@dataclass
class RetrainState:
    handled_check_id: int = 0  # failed check records up to this id have been seen
    handled: list[str] = field(default_factory=list)  # "check@window" already retrained for
    rows_after: int = 0  # labelled rows stored after this event id count as new
    last_launch: float | None = None

    def as_dict(self) -> dict:
        return {**self.__dict__, "handled": list(self.handled)}


@dataclass(frozen=True)
class Decision:
    run_key: str | None
    reason: str
    state: RetrainState
    causes: list[str] = field(default_factory=list)


def decide(
    now: float,
    state: RetrainState,
    failed: list[FailedCheck],
    new_rows: int,
    rows_marker: int,
    policy: RetrainPolicy,
) -> Decision:
    """``failed``: failed trigger checks (any age); ``new_rows``: labelled rows stored after
    ``state.rows_after``, the newest of them at event id ``rows_marker``."""
    # A window re-monitored (new labels, a new champion) and failing again is the same cause.
    fresh = sorted((f for f in failed if f.record_id > state.handled_check_id
                    and f"{f.check}@{f.window}" not in state.handled),
                   key=lambda f: f.record_id)
    causes, keys = [], []
    if fresh:
        last = fresh[-1]
        causes.append(f"{last.check} failed on window {last.window}: {last.description}"
                      + (f" (+{len(fresh) - 1} more failures)" if len(fresh) > 1 else ""))
        keys.append(f"check-{last.record_id}")
    if new_rows >= policy.min_new_rows:
        causes.append(f"{new_rows} new labelled rows (>= {policy.min_new_rows})")
        keys.append(f"rows-{rows_marker}")
    if not causes:
        return Decision(None, (
            f"no failed drift or live-performance check after record {state.handled_check_id}; "
            f"{new_rows} new labelled rows (< {policy.min_new_rows})"), state)
    if state.last_launch is not None and now - state.last_launch < policy.cooldown_s:
        left = policy.cooldown_s - (now - state.last_launch)
        return Decision(None, (f"cooldown: last retraining launched {now - state.last_launch:.0f}"
                               f" s ago, {left:.0f} s left; waiting: {'; '.join(causes)}"),
                        state, causes)
    new_state = RetrainState(
        handled_check_id=max([state.handled_check_id, *(f.record_id for f in fresh)]),
        handled=[*state.handled, *(f"{f.check}@{f.window}" for f in fresh)][-500:],
        rows_after=max(rows_marker, state.rows_after),  # a retrain uses every row so far
        last_launch=now,
    )
    return Decision("retrain:" + "+".join(keys), "; ".join(causes), new_state, causes)
