"""Features: the one feature function applied to each sealed split."""


from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.config import CONTENT, PERIOD, ROW_KEY, TARGET
from mlops_assets.defs.metadata import file_metadata, markdown_table
from mlops_assets.defs.resources import ProjectResource, work_dir
from mlops_assets.lib import io
from mlops_assets.lib.dataset import features, split
from mlops_assets.schemas import failure_cases, feature_schema, summarize_failures

FEATURE_META = [ROW_KEY, PERIOD, TARGET, CONTENT]


class FeatureConfig(dg.Config):
    """Rows built at a time: the split is read and its features written a chunk at a time."""

    chunk_rows: int = io.CHUNK_ROWS


def _feature_asset(split_name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{split_name}_features",
        ins={"rows": dg.AssetIn(f"{split_name}_set")},  # a Path: read a chunk at a time
        group_name="features",
        kinds={"pandas"},
        description=f"Model features of the {split_name} rows (lib/features.build_features).",
    )
    def _asset(context: dg.AssetExecutionContext, config: FeatureConfig, rows: Path,
               project: ProjectResource):
        contract = project.contract()
        positives, periods = 0, set()
        with work_dir(project, split_name + "_features") as work, \
                io.ParquetWriter(work / "features.parquet") as out:
            for chunk in io.read_parquet_chunks(rows, config.chunk_rows,
                                                categories=contract.categorical):
                out.write(pd.concat([features.build_features(chunk, contract),
                                     chunk[FEATURE_META]], axis=1))
                positives += int(chunk[TARGET].sum())
                periods.update(chunk[PERIOD].unique())
            out.close()
            yield dg.Output(
                io.ParquetFile(out.path),
                metadata={
                    **file_metadata(out.path, contract),
                    "positive_rate": round(positives / out.rows, 4) if out.rows else 0.0,
                    "periods": ", ".join(sorted(periods)),
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
    def _check(stored: Path, project: ProjectResource) -> dg.AssetCheckResult:
        contract = project.contract()
        schema, parts, start = feature_schema(contract), [], 0
        for chunk in io.read_parquet_chunks(stored, io.CHUNK_ROWS):
            chunk.index += start  # failures name the row of the whole table
            parts.append(failure_cases(schema, chunk[contract.features]))
            start += len(chunk)
        failures = pd.concat(parts, ignore_index=True)
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
                    description="No row of this training input carries the content of a "
                                "sealed test row.")
    def _check(stored: Path, project: ProjectResource) -> dg.AssetCheckResult:
        rows, leaked, examples = split.leaked_test_rows(project.paths.sealed_test, stored)
        return dg.AssetCheckResult(
            passed=not leaked,
            metadata={"rows_checked": rows, "sealed_test_rows_found": leaked},
            description=(f"none of {rows} rows is a sealed test row" if not leaked
                         else f"{leaked} sealed test rows, e.g. {examples}"),
        )

    return _check


feature_checks = [
    *(_schema_check(a) for a in (train_features, validation_features, test_features)),
    *(_no_test_rows_check(a) for a in (train_features, validation_features)),
]
