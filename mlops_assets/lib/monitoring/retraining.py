"""When to act on the model in use. ``choose_action``: what a labelled window says (hold,
recalibrate or retrain, and why), against the model's own validation figures with sampling
error. ``decide``: launching runs for those causes or for enough new labelled rows, subject to
a cooldown; one cause, one run. Pure logic; the Dagster sensor and the backtest feed it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RetrainPolicy:
    cooldown_s: float = 3600.0  # between retrainings; recalibrations have none
    min_new_rows: int = 5000


# --- what the labels say: hold, recalibrate or retrain -----------------------------------


def _entropy(rate: float) -> float:
    """Log loss of always predicting the base rate: what a model with no skill scores."""
    r = min(max(rate, 1e-6), 1 - 1e-6)
    return float(-(r * np.log(r) + (1 - r) * np.log(1 - r)))


def _row_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the sampling error of an AUC from its class counts."""
    if positives == 0 or negatives == 0 or auc != auc:
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2)
           + (negatives - 1) * (q2 - auc**2)) / (positives * negatives)
    return float(np.sqrt(max(var, 0.0)))


@dataclass(frozen=True)
class Reference:
    """The model in use's own validation figures: what its live figures are held against."""

    auc: float
    log_loss: float
    positive_rate: float

    @property
    def skill(self) -> float:
        """Share of the base-rate log loss the model removed on validation. Log loss alone
        is not comparable across windows whose base rate moved (the Bank rate goes from ~10%
        to ~50%); this share is."""
        return 1 - self.log_loss / _entropy(self.positive_rate)


@dataclass(frozen=True)
class Evidence:
    """What one labelled window says about the model in use, with sampling errors."""

    window: str
    labelled: int
    positive_rate: float
    auc: float
    auc_se: float
    log_loss: float
    log_loss_se: float
    calibration_gap: float  # mean prediction - observed rate
    calibration_gap_se: float
    recalibrated_log_loss: float  # cross-fitted Platt on this window: what recalibrating buys
    recalibration_gain_se: float
    drift_share: float | None = None

    @classmethod
    def from_labels(cls, window: str, y: np.ndarray, p: np.ndarray,
                    drift_share: float | None = None) -> Evidence:
        from mlops_assets.lib import evaluation
        from mlops_assets.lib.training import calibration

        y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
        n, pos = len(y), int(y.sum())
        if n == 0:
            nan = float("nan")
            return cls(window, 0, nan, nan, nan, nan, nan, nan, nan, nan, nan, drift_share)
        rate = pos / n
        auc = evaluation.metrics(y, p, 0.5)["roc_auc"]
        loss = _row_loss(y, p)
        both = 0 < pos < n
        recal = _row_loss(y, calibration.cross_fitted(p, y)) if both and n >= 20 else loss
        gain = loss - recal
        return cls(
            window, n, rate, auc, auc_standard_error(auc, pos, n - pos),
            float(loss.mean()), float(loss.std() / np.sqrt(n)),
            float(p.mean() - rate), float(np.sqrt(rate * (1 - rate) / n)),
            float(recal.mean()), float(gain.std() / np.sqrt(n)), drift_share)

    def as_dict(self) -> dict:
        """Plain JSON: rounded, NaN as None."""
        return {k: (None if v != v else round(v, 4)) if isinstance(v, float) else v
                for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, raw: dict, drift_share: float | None = None) -> Evidence:
        values = {k: (float("nan") if raw.get(k) is None else raw[k])
                  for k in cls.__dataclass_fields__ if k not in ("window", "drift_share")}
        return cls(window=raw["window"], drift_share=drift_share, **values)


@dataclass(frozen=True)
class LossPolicy:
    """When the labels call for recalibration or retraining. Every comparison allows ``z``
    standard errors of sampling noise on top of its tolerance."""

    min_labelled: int = 150  # fewer labelled rows: not judged
    z: float = 2.0
    auc_tolerance: float = 0.03  # live AUC may sit this far under validation AUC
    skill_tolerance: float = 0.05  # recalibrated skill may sit this far under validation's
    min_recalibration_gain: float = 0.005  # log loss a recalibration must remove ...
    recalibration_z: float = 1.0  # ... beyond this many standard errors (it is cheap)
    max_drift_share: float = 0.5  # drift above this is reported as a warning, not a trigger
    # A recalibration is fitted on the latest labelled window, extended back to at least this
    # many labelled rows: Platt's two parameters on ~200 rows overshoot (Bank backtest: 300-400
    # rows gave mean log loss 0.641, the latest period alone 0.655).
    calibration_rows: int = 400


@dataclass(frozen=True)
class Action:
    kind: str  # "hold", "recalibrate" or "retrain"
    why: str
    evidence: dict


def choose_action(evidence: Evidence, reference: Reference, policy: LossPolicy) -> Action:
    """Retrain when the ranking fell (live AUC under validation AUC beyond tolerance and
    sampling error) or when even a recalibrated model keeps far less skill than validation
    showed; recalibrate when ranking holds but a refit calibrator would remove a significant
    part of the log loss; else hold. Drift is named as a warning and never acts alone."""
    e, z = evidence, policy.z
    warning = ""
    if e.drift_share is not None and e.drift_share > policy.max_drift_share:
        warning = f"; drift warning: {e.drift_share:.0%} of features drifted"
    facts = e.as_dict()
    if e.labelled < policy.min_labelled:
        return Action("hold", f"window {e.window}: {e.labelled} labelled rows "
                              f"(< {policy.min_labelled}): not judged yet{warning}", facts)
    reasons = []
    auc_floor = reference.auc - policy.auc_tolerance - z * e.auc_se
    if e.auc == e.auc and e.auc < auc_floor:
        reasons.append(f"ranking fell: live AUC {e.auc:.3f} < {auc_floor:.3f} (validation "
                       f"{reference.auc:.3f} - {policy.auc_tolerance} - {z} x SE "
                       f"{e.auc_se:.3f})")
    # Skill after recalibration, against the loss validation skill predicts at this rate.
    base = _entropy(e.positive_rate)
    expected = base * (1 - reference.skill + policy.skill_tolerance)
    if e.recalibrated_log_loss > expected + z * e.log_loss_se:
        reasons.append(
            f"loss beyond recalibration: recalibrated log loss {e.recalibrated_log_loss:.3f} "
            f"> {expected + z * e.log_loss_se:.3f} (validation skill {reference.skill:.3f} "
            f"- {policy.skill_tolerance} at base rate {e.positive_rate:.3f}, + {z} x SE)")
    if reasons:
        return Action("retrain", f"window {e.window}: " + "; ".join(reasons) + warning, facts)
    gain = e.log_loss - e.recalibrated_log_loss
    needed = policy.min_recalibration_gain + policy.recalibration_z * e.recalibration_gain_se
    if gain > needed:
        return Action("recalibrate", (
            f"window {e.window}: calibration off (mean prediction "
            f"{e.positive_rate + e.calibration_gap:.3f} vs observed rate {e.positive_rate:.3f}) "
            f"while ranking holds (AUC {e.auc:.3f} vs "
            f"validation {reference.auc:.3f}): a refit calibrator cuts log loss "
            f"{e.log_loss:.3f} -> {e.recalibrated_log_loss:.3f} (> {needed:.3f} needed)"
            f"{warning}"), facts)
    return Action("hold", (f"window {e.window}: AUC {e.auc:.3f} (validation "
                           f"{reference.auc:.3f}), log loss {e.log_loss:.3f}, recalibration "
                           f"would remove {gain:.3f} (< {needed:.3f}){warning}"), facts)


# --- launching runs for what the windows call for ------------------------------------


@dataclass(frozen=True)
class Judged:
    """The action one labelled window calls for (``choose_action``), from its live-metrics
    record ``record_id``."""

    record_id: int
    window: str
    action: Action


@dataclass
class RetrainState:
    handled_event_id: int = 0  # judged windows up to this record id have been seen
    handled: list[str] = field(default_factory=list)  # "action@window" already launched
    rows_after: int = 0  # labelled rows stored after this event id count as new
    last_launch: float | None = None  # of a retraining (the cooldown is for retraining)

    def as_dict(self) -> dict:
        return {**self.__dict__, "handled": list(self.handled)}

    @classmethod
    def from_dict(cls, raw: dict) -> RetrainState:
        """A cursor, ignoring fields of older versions (a drift-check cursor starts over)."""
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Decision:
    run_key: str | None
    reason: str
    state: RetrainState
    causes: list[str] = field(default_factory=list)
    job: str | None = None  # "retrain" or "recalibrate"


def decide(
    now: float,
    state: RetrainState,
    judged: list[Judged],
    new_rows: int,
    rows_marker: int,
    policy: RetrainPolicy,
) -> Decision:
    """``judged``: what the labelled windows call for (any age; the newest acts);
    ``new_rows``: labelled rows stored after ``state.rows_after``, the newest of them at event
    id ``rows_marker``. A retraining inside the cooldown becomes a recalibration when a
    window called for it (cheap, and the loss is what it fixes first); rows alone wait."""
    unseen = sorted((j for j in judged if j.record_id > state.handled_event_id),
                    key=lambda j: j.record_id)
    # A window re-judged (new labels, a new champion) calling for the same action: one run.
    fresh = [j for j in unseen if j.action.kind != "hold"
             and f"{j.action.kind}@{j.window}" not in state.handled]
    causes, keys, job = [], [], None
    if fresh:
        last = fresh[-1]
        job = last.action.kind
        causes.append(last.action.why + (f" (+{len(fresh) - 1} earlier windows)"
                                         if len(fresh) > 1 else ""))
        keys.append(f"{job}-{last.record_id}")
    if new_rows >= policy.min_new_rows:
        causes.append(f"{new_rows} new labelled rows (>= {policy.min_new_rows})")
        keys.append(f"rows-{rows_marker}")
        job = "retrain"
    seen_id = max([state.handled_event_id, *(j.record_id for j in unseen)])
    if not causes:
        newest = unseen[-1].action.why if unseen else "no newly judged labelled window"
        return Decision(None, (f"hold: {newest}; {new_rows} new labelled rows "
                               f"(< {policy.min_new_rows})"),
                        RetrainState(seen_id, state.handled, state.rows_after,
                                     state.last_launch))
    cooling = (state.last_launch is not None and now - state.last_launch < policy.cooldown_s)
    if job == "retrain" and cooling:
        left = policy.cooldown_s - (now - state.last_launch)
        if not fresh:
            return Decision(None, (f"cooldown: last retraining launched "
                                   f"{now - state.last_launch:.0f} s ago, {left:.0f} s left; "
                                   f"waiting: {'; '.join(causes)}"), state, causes)
        job, keys = "recalibrate", [f"recalibrate-{fresh[-1].record_id}"]
        causes = [f"retraining held by the cooldown ({left:.0f} s left), recalibrating "
                  f"instead: {causes[0]}"]
    new_state = RetrainState(
        handled_event_id=seen_id,
        handled=[*state.handled, *(f"{job}@{j.window}" for j in fresh)][-500:],
        rows_after=max(rows_marker, state.rows_after) if job == "retrain" else state.rows_after,
        last_launch=now if job == "retrain" else state.last_launch,
    )
    return Decision(f"{job}:" + "+".join(keys), "; ".join(causes), new_state, causes, job)
