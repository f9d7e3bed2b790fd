"""The EDA report: what the data the model learns from looks like."""


from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from mlops_assets.config import PERIOD, TARGET
from mlops_assets.defs.metadata import markdown_table, report_link
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib import io
from mlops_assets.lib.reporting import reports


class EdaConfig(dg.Config):
    """Above ``sample_rows`` training and validation rows, the report summarizes a
    deterministic sample of them (the metadata says so), read a chunk at a time."""

    sample_rows: int = 200_000
    chunk_rows: int = io.CHUNK_ROWS


@dg.asset(
    group_name="dataset",
    kinds={"evidently", "html"},
)
def eda_report(
    context: dg.AssetExecutionContext, config: EdaConfig,
    train_set: Path, validation_set: Path, project: ProjectResource
) -> dg.MaterializeResult:
    """Evidently data summary (HTML) of the training and validation rows; never the test rows."""
    contract = project.contract()
    files = [train_set, validation_set]
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    positions = io.sample_positions(total, config.sample_rows)
    rows = io.read_parquet_rows(files, positions, config.chunk_rows)
    sampled = None if len(positions) == total else (
        f"a deterministic sample of {len(positions):,} of {total:,} rows (seed 0)")
    # The rows as the contract defines them (categories as text, a sentinel such as
    # pdays = 999 a value), not the model's encoding: missing means what the contract says.
    frame = rows[[*contract.features, TARGET, PERIOD]]
    path = project.paths.reports / "eda" / f"data_summary_{context.run.run_id[:8]}.html"
    published = project.report_store().publish(reports.eda_snapshot(frame, contract),
                                               contract.name, path)
    stats = reports.key_statistics(frame, contract)
    return dg.MaterializeResult(
        metadata={
            **report_link(published),
            "rows": total,
            "sampled": sampled or "no: every training and validation row",
            "positive_rate": round(float(frame[TARGET].mean()), 4),
            "periods": f"{frame[PERIOD].min()} .. {frame[PERIOD].max()}",
            "key_statistics": markdown_table(stats),
        }
    )
