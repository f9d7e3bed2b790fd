"""The asset graph, snapshotted: a rename or a lost check cannot slip through unnoticed."""

from __future__ import annotations

from mlops_assets.definitions import defs

ASSETS = {
    "ingestion": ["raw_batch"],
    "validation": ["quarantined_rows", "validated_batch"],
    "dataset": ["duplicate_rows", "eda_report", "test_set", "train_set", "validation_set"],
    "features": ["test_features", "train_features", "validation_features"],
    "training": ["candidate_model"],
    "evaluation": ["model_card", "model_evaluation"],
    "governance": ["candidate_bento", "champion", "gate_report"],
    "deployment": ["bento"],
    "scoring": ["batch_scores"],
    "labels": ["feedback_files", "feedback_labels"],
    "monitoring": ["drift_report", "live_performance", "prediction_log", "prediction_log_files",
                   "serving_health", "window_traffic"],
}
CHECKS = [
    "candidate_bento:serves_like_offline",
    "drift_report:drift_within_limit",
    "gate_report:meets_absolute_thresholds",
    "gate_report:not_worse_than_champion",
    "gate_report:serves_finite_probabilities",
    "gate_report:slices_hold_up",
    "live_performance:live_performance_above_floors",
    "raw_batch:raw_batch_schema",
    "serving_health:serving_health_ok",
    "test_features:feature_schema",
    "test_set:test_set_is_sealed",
    "train_features:feature_schema",
    "train_features:no_sealed_test_rows",
    "validated_batch:invalid_fraction_below_limit",
    "validation_features:feature_schema",
    "validation_features:no_sealed_test_rows",
]
BLOCKING = {c for c in CHECKS if not c.startswith(("drift_report", "live_performance",
                                                   "serving_health"))}


def test_asset_groups_and_checks_are_as_documented():
    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    assert {g: sorted(keys) for g, keys in groups.items()} == ASSETS
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    assert checks == CHECKS
    blocking = {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys
                if graph.get_check_spec(k).blocking}
    assert blocking == BLOCKING


def test_monitoring_is_downstream_of_the_served_model():
    graph = defs.resolve_asset_graph()

    def upstream(name: str) -> set[str]:
        key = next(k for k in graph.get_all_asset_keys() if k.to_user_string() == name)
        return {k.to_user_string() for k in graph.upstream_key_iterator(key)}

    assert {"bento", "champion", "prediction_log_files", "prediction_log", "window_traffic"} \
        <= upstream("drift_report")
    assert {"feedback_files", "feedback_labels", "bento"} <= upstream("live_performance")


LIFECYCLE = ["ingestion", "validation", "labels", "dataset", "features", "training", "evaluation",
             "governance", "deployment", "scoring", "monitoring"]


def test_the_group_graph_reads_in_lifecycle_order_with_no_cycle():
    """Collapsed to groups (the UI's lineage view), every edge runs forward in the
    lifecycle: the group graph has no cycle, and ingestion is drawn before deployment."""
    graph = defs.resolve_asset_graph()
    group = {key: graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(group.values()) == set(LIFECYCLE)
    backwards = sorted(
        f"{group[up]} -> {group[key]} ({up.to_user_string()} -> {key.to_user_string()})"
        for key in group for up in graph.get(key).parent_keys
        if up in group and LIFECYCLE.index(group[up]) > LIFECYCLE.index(group[key]))
    assert backwards == []


def test_every_asset_has_an_owner_its_stage_a_code_version_and_its_source():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.owners == ["team:mlops"], name
        assert node.tags.get("lifecycle") == node.group_name, name
        if node.is_materializable:  # the files outside (specs) have no code of their own
            assert "dagster/code_references" in node.metadata, name
            assert node.code_version and len(node.code_version) == 12, name
