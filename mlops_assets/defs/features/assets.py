"""Features: the one feature function applied to each sealed split."""


import dagster as dg
import pandas as pd

from mlops_assets.config import PERIOD, ROW_KEY, TARGET
from mlops_assets.defs.metadata import frame_metadata, markdown_table
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib import features, split
from mlops_assets.schemas import failure_cases, feature_schema, summarize_failures

FEATURE_META = [ROW_KEY, PERIOD, TARGET]


def _feature_asset(split_name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{split_name}_features",
        ins={"rows": dg.AssetIn(f"{split_name}_set")},
        group_name="features",
        kinds={"pandas"},
        description=f"Model features of the {split_name} rows (lib/features.build_features).",
    )
    def _asset(rows: pd.DataFrame, project: ProjectResource) -> dg.Output[pd.DataFrame]:
        contract = project.contract()
        frame = pd.concat(
            [features.build_features(rows, contract), rows[FEATURE_META]], axis=1
        )
        return dg.Output(
            frame,
            metadata={
                **frame_metadata(frame, contract),
                "positive_rate": round(float(rows[TARGET].mean()), 4) if len(rows) else 0.0,
                "periods": ", ".join(sorted(rows[PERIOD].unique())),
            },
        )

    return _asset


train_features, validation_features, test_features = (
    _feature_asset(s) for s in ("train", "validation", "test")
)


def _schema_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="feature_schema", blocking=True,
                    description="The features match the contract's feature schema: every "
                                "column, its category order and numeric bounds.")
    def _check(frame: pd.DataFrame, project: ProjectResource) -> dg.AssetCheckResult:
        contract = project.contract()
        failures = failure_cases(feature_schema(contract), frame[contract.features])
        return dg.AssetCheckResult(
            passed=failures.empty,
            metadata={
                "failure_count": len(failures),
                "failure_cases": markdown_table(failures) if len(failures) else "none",
            },
            description="ok" if failures.empty else summarize_failures(failures),
        )

    return _check


def _no_test_rows_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="no_sealed_test_rows", blocking=True,
                    description="No row of this training input is a sealed test row.")
    def _check(frame: pd.DataFrame, project: ProjectResource) -> dg.AssetCheckResult:
        leaked = split.leaked_test_rows(project.paths.sealed_test, frame[ROW_KEY])
        return dg.AssetCheckResult(
            passed=leaked.empty,
            metadata={"rows_checked": len(frame), "sealed_test_rows_found": len(leaked)},
            description=(
                f"none of {len(frame)} rows is a sealed test row"
                if leaked.empty
                else f"{len(leaked)} sealed test rows, e.g. {leaked.head(5).tolist()}"
            ),
        )

    return _check


feature_checks = [
    *(_schema_check(a) for a in (train_features, validation_features, test_features)),
    *(_no_test_rows_check(a) for a in (train_features, validation_features)),
]
