"""Metadata helpers so every asset shows the same facts in the UI the same way."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd


def column_schema(df: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in df.dtypes.items()])


def frame_metadata(df: pd.DataFrame) -> dict:
    return {"dagster/row_count": len(df), "dagster/column_schema": column_schema(df)}


def markdown_table(df: pd.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    shown = df.head(max_rows)
    note = f"\n\n({len(df) - max_rows} more rows)" if len(df) > max_rows else ""
    return dg.MetadataValue.md(shown.to_markdown(index=False) + note)


def file_link(path: Path) -> dict:
    return {"path": dg.MetadataValue.path(str(path)), "link": dg.MetadataValue.url(path.as_uri())}
