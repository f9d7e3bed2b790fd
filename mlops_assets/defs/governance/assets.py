"""Governance: the challenger/champion gate, promotion of the champion, and rollback."""

import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.config import PERIOD, TARGET
from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.resources import GateResource, ProjectResource
from mlops_assets.lib import evaluation, io
from mlops_assets.lib.dataset import features
from mlops_assets.lib.dataset.rows import FeatureRows
from mlops_assets.lib.governance import bento, gate
from mlops_assets.lib.governance.registry import CANARY, PRODUCTION, SHADOW

SMOKE_ROWS = 50


@dg.asset(group_name="governance", kinds={"python"}, pool="promotion")
def gate_report(
    context: dg.AssetExecutionContext,
    candidate_model: dict,
    model_evaluation: dict,
    test_features: Path,
    project: ProjectResource,
    gate_policy: GateResource,
) -> dg.Output[dict]:
    """The challenger against the champion on the same recent sealed test rows, plus the
    serving smoke test: the evidence the blocking gate checks judge."""
    test_features = FeatureRows(test_features, project.contract()).frame()
    policy = gate_policy.policy(project.contract())
    registry = project.registry()
    challenger = registry.load(candidate_model["tag"])
    champion_tag = registry.champion()
    # Each model scores the sealed test set once: the recent rows (the paired comparison)
    # and the slices (against the champion's same slices; the protected columns' error rates
    # against each other) are parts of it.
    calibrated_on = candidate_model.get("calibration_periods")
    if calibrated_on:  # a recalibration claims the periods it was fitted on: judged there
        recent = test_features[test_features[PERIOD].isin(calibrated_on)]
        basis = (f"recalibrated version: the sealed test rows of its calibration periods "
                 f"{calibrated_on} (it was fitted on their train and validation rows)")
    else:
        recent = gate.recent_rows(test_features, policy.recent_periods,
                                  policy.min_comparison_rows)
        basis = (f"the latest {policy.recent_periods} periods, back to at least "
                 f"{policy.min_comparison_rows} rows")
    is_recent = test_features.index.isin(recent.index)
    y_all = test_features[TARGET].to_numpy().astype(int)
    p_chal = challenger.predict_frame(test_features)
    contract = challenger.contract
    comparison, regressions, sampled = None, None, None
    if champion_tag and champion_tag != challenger.version:
        champion = registry.load(champion_tag)
        p_champ = champion.predict_frame(test_features)
        recent_rows = np.flatnonzero(is_recent)
        compared = recent_rows[io.sample_positions(len(recent_rows),
                                                           policy.bootstrap_rows)]
        sliced = io.sample_positions(len(y_all), policy.bootstrap_rows)
        if len(compared) < len(recent_rows) or len(sliced) < len(y_all):
            sampled = (f"comparison on a deterministic sample of {len(compared):,} of "
                       f"{len(recent_rows):,} recent rows, slices on {len(sliced):,} of "
                       f"{len(y_all):,} rows (seed 0; bootstrap_rows {policy.bootstrap_rows:,})")
        comparison = evaluation.paired_bootstrap(
            y_all[compared], p_champ[compared], p_chal[compared], n=policy.n_bootstrap)
        # The slices' values for the sampled rows only: a value per row is a Python
        # string, 1.3 GB for Bank's three slices at 6M rows.
        regressions = gate.slice_regressions(
            evaluation.slice_groups(test_features.iloc[sliced], contract), y_all[sliced],
            p_champ[sliced], p_chal[sliced])
    protected = evaluation.slice_groups(test_features, contract, only=contract.protected)
    gaps = gate.error_rate_gaps(protected, y_all, (p_chal >= challenger.threshold).astype(int))
    records = features.to_records(test_features.head(SMOKE_ROWS), challenger.contract)
    rules = {
        "meets_absolute_thresholds": gate.absolute(model_evaluation["metrics"], policy),
        "not_worse_than_champion": gate.non_inferior(comparison, policy),
        "slices_hold_up": gate.slices(regressions, gaps, policy),
        "serves_finite_probabilities": gate.smoke(challenger, records),
    }
    # The numbers each rule judged, as check metadata: the UI plots them run over run.
    values = {
        "meets_absolute_thresholds": {"test_auc": model_evaluation["metrics"]["roc_auc"],
                                      "min_auc": policy.min_auc},
        "not_worse_than_champion": {
            "rows": comparison.rows, "auc_delta": comparison.auc_delta,
            "auc_delta_ci_low": comparison.auc_delta_ci[0],
            "log_loss_delta": comparison.log_loss_delta,
            "log_loss_delta_ci_high": comparison.log_loss_delta_ci[1],
            "auc_margin": policy.auc_margin, "log_loss_margin": policy.log_loss_margin,
        } if comparison else {},
        "slices_hold_up": {
            **({"worst_slice_delta_ci_high": regressions["delta_ci_high"].min(),
                "max_slice_drop": policy.max_slice_drop}
               if regressions is not None and len(regressions) else {}),
            **({"max_error_rate_excess": gaps["excess"].max(),
                "max_slice_gap": policy.max_slice_gap} if len(gaps) else {}),
        },
        "serves_finite_probabilities": {"predictions": len(records)},
    }
    report = {
        "challenger": challenger.version,
        "champion": champion_tag,
        "recent_periods": sorted(recent["_period"].unique()),
        "comparison_basis": basis,
        "sampled": sampled,
        "comparison": comparison.__dict__ if comparison else None,
        "rules": {name: {"passed": ok, "why": why,
                         "values": {k: round(float(v), 4) for k, v in values[name].items()}}
                  for name, (ok, why) in rules.items()},
        "policy": policy.__dict__,
    }
    table = pd.DataFrame(
        [{"rule": k, "passed": v["passed"], "why": v["why"]} for k, v in report["rules"].items()]
    )
    context.log.info(f"gate for {challenger.version} vs {champion_tag}: {table.to_dict('records')}")
    return dg.Output(
        report,
        metadata={
            "challenger": challenger.version,
            "champion": champion_tag or "none",
            "comparison_rows": len(recent),
            "comparison_basis": basis,
            "sampled": sampled or "no: every row",
            "rules": markdown_table(table),
            "thresholds": markdown_table(pd.DataFrame(
                [{"setting": k, "value": v} for k, v in policy.__dict__.items()])),
            "slices_vs_champion": markdown_table(regressions.round(4))
            if regressions is not None and len(regressions) else "no champion or no slice",
            "error_rate_gaps": markdown_table(gaps.round(4)) if len(gaps)
            else "no protected column (contract: protected)",
        },
    )


def _rule_check(rule: str, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=gate_report, name=rule, blocking=True, description=description)
    def _check(gate_report: dict) -> dg.AssetCheckResult:
        result = gate_report["rules"][rule]
        return dg.AssetCheckResult(
            passed=bool(result["passed"]),
            description=result["why"],
            metadata={"challenger": gate_report["challenger"],
                      "champion": gate_report["champion"] or "none",
                      **result.get("values", {})},
        )

    return _check


gate_checks = [
    _rule_check("meets_absolute_thresholds", "Test AUC at or above the configured minimum."),
    _rule_check("not_worse_than_champion",
                "Paired bootstrap on the same recent sealed test rows: AUC and log loss "
                "no worse than the champion's beyond the margin."),
    _rule_check("slices_hold_up",
                "No slice served significantly worse than by the champion (AUC beyond "
                "max_slice_drop), and no protected column whose slices differ in error "
                "rates beyond sampling error by more than max_slice_gap."),
    _rule_check("serves_finite_probabilities",
                "The model loads through the serving code path and predicts finite "
                "probabilities on sample rows."),
]


class DeployCheckConfig(dg.Config):
    rows: int = 200  # sealed test rows the served Bento must answer as offline
    ready_timeout_s: float = 120.0  # bound on `bentoml serve` becoming ready


@dg.asset(group_name="governance", kinds={"bentoml"}, pool="promotion")
def candidate_bento(
    context: dg.AssetExecutionContext,
    config: DeployCheckConfig,
    candidate_model: dict,
    gate_report: dict,
    test_features: Path,
    project: ProjectResource,
) -> dg.Output[dict]:
    """The challenger's Bento, built once and validated as it will run: started with
    `bentoml serve` in a child process on 127.0.0.1, it must become ready and answer sealed
    test rows (single rows and a /predict_batch table) with the offline probabilities before
    the champion may move (the blocking check `serves_like_offline`). The champion's Bento is
    this one, never a rebuild."""
    registry = project.registry()
    tag = candidate_model["tag"]
    model = registry.load(tag)
    rows = FeatureRows(test_features, model.contract).frame().head(config.rows)
    built = bento.build_bento(project.paths.home, tag, model.contract)
    checked = bento.validate_bento(project.paths.home, built.tag,
                                   features.to_records(rows, model.contract),
                                   model.predict_frame(rows), config.ready_timeout_s)
    if checked.passed:
        bento.record_bento(project.paths.home, tag, built.tag)
    context.log.info(f"deploy-time check of {built.tag} ({tag}): {checked.why}")
    return dg.Output(
        {"model_tag": tag, "bento_tag": built.tag, "passed": checked.passed,
         "why": checked.why, "ready_seconds": checked.ready_seconds, "rows": checked.rows,
         "max_abs_diff": checked.max_abs_diff},
        metadata={"bento_tag": built.tag, "model_tag": tag, "passed": checked.passed,
                  "why": checked.why, "build_seconds": round(built.seconds, 2),
                  "bento_size": dg.MetadataValue.text(f"{built.size_bytes / 2**20:.1f} MiB")},
    )


@dg.asset_check(asset=candidate_bento, name="serves_like_offline", blocking=True,
                description="The challenger's Bento, started with `bentoml serve`, became "
                            "ready within the bound and answered sealed test rows with the "
                            "offline probabilities (to 1e-9).")
def serves_like_offline(candidate_bento: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bool(candidate_bento["passed"]), description=candidate_bento["why"],
        metadata={"bento_tag": candidate_bento["bento_tag"],
                  "rows": candidate_bento["rows"],
                  **({"ready_seconds": round(candidate_bento["ready_seconds"], 2)}
                     if candidate_bento["ready_seconds"] is not None else {}),
                  **({"max_abs_diff": float(candidate_bento["max_abs_diff"])}
                     if candidate_bento["max_abs_diff"] is not None else {})})


@dg.asset(group_name="governance", kinds={"bentoml"}, pool="promotion")
def champion(
    context: dg.AssetExecutionContext,
    candidate_model: dict,
    gate_report: dict,
    candidate_bento: dict,
    project: ProjectResource,
) -> dg.Output[dict]:
    """The production alias: moved to the challenger only after every gate check passed and
    its Bento answered as offline when served (`candidate_bento`)."""
    registry = project.registry()
    tag = candidate_model["tag"]
    if registry.champion() == tag:
        event = {"tag": tag, "previous": tag, "action": "unchanged"}
    else:
        # Compare and set: if another run moved the champion after this gate compared
        # against it, this promotion is refused rather than judged on stale evidence.
        event = registry.promote(tag, reason=f"passed the gate in run {context.run.run_id}",
                                 expect=gate_report["champion"])
    return dg.Output(
        {"tag": tag, "previous": event["previous"]},
        metadata={"champion": tag, "previous": event["previous"] or "none",
                  "history": champion_history(registry)},
    )


def champion_history(registry) -> dg.MetadataValue:
    """The champion's moves, newest first, in columns that fit the UI's metadata table: when
    (to the minute), what, to which version, from which, and why (a run id shortened)."""
    rows = [{"at": h["at"][:16].replace("T", " "), "action": h["action"],
             "version": (h["tag"] or "-").split(":")[-1],
             "from": (h["previous"] or "-").split(":")[-1],
             "reason": re.sub(r"\b([0-9a-f]{8})-[0-9a-f-]{27}\b", r"\1", h["reason"])}
            for h in reversed(registry.history(PRODUCTION))]
    return markdown_table(pd.DataFrame(rows, columns=["at", "action", "version", "from",
                                                      "reason"]))


class RollbackConfig(dg.Config):
    to: str | None = None  # a model tag; default: the champion before the current one
    reason: str = "manual rollback"


@dg.op
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig,
                      project: ProjectResource) -> None:
    """Set the production alias back to the previous (or a named) version."""
    registry = project.registry()
    event = registry.rollback(config.to, config.reason)
    context.log_event(
        dg.AssetMaterialization(
            asset_key=champion.key,
            description=f"rollback: {event['previous']} -> {event['tag']}",
            metadata={"champion": event["tag"], "previous": event["previous"] or "none",
                      "history": champion_history(registry)},
        )
    )


@dg.job(description="Roll the champion back to the previous (or a named) model version.")
def rollback():
    rollback_champion()


class AliasConfig(dg.Config):
    tag: str | None = None  # a model tag; None clears the alias
    reason: str = "manual change"


def _alias_job(alias: str, what: str, description: str) -> dg.JobDefinition:
    """A one-op job that points a serving alias at a model version, or clears it."""

    @dg.op(name=f"set_{alias}_alias", description=what)
    def set_alias(config: AliasConfig, project: ProjectResource) -> None:
        project.registry().set_alias(alias, config.tag, alias, config.reason)

    @dg.job(name=f"set_{alias}", description=description)
    def job():
        set_alias()

    return job


set_canary = _alias_job(
    CANARY, "Point the canary alias at a model version (or clear it); the service sends "
    "MLOPS_CANARY_SHARE of its requests there.",
    "Send a share of live traffic to a challenger (the canary alias), or stop.")
set_shadow = _alias_job(
    SHADOW, "Point the shadow alias at a model version (or clear it); the service scores "
    "MLOPS_SHADOW_SHARE of its requests with it too, logs both scores, answers the champion's.",
    "Score live traffic with a challenger in the shadow of the champion (never answered), "
    "or stop.")
