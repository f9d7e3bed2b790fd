"""The one patch of Evidently's internals (lib/reporting/patches.py): it works, and it is
still needed (the first test fails once Evidently no longer counts a missing value as a
category: then the patch goes)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset
from evidently.metrics import column_statistics

from mlops_assets.config import TARGET, load_contract
from mlops_assets.lib.reporting import patches, reports

BANK = load_contract("bank")


def _dataset() -> Dataset:
    frame = pd.DataFrame({"default": pd.Series(["no"] * 6 + [np.nan] * 3 + ["yes"],
                                               dtype=object)})
    return Dataset.from_pandas(frame, data_definition=DataDefinition(
        categorical_columns=["default"]))


def test_evidently_still_counts_a_missing_value_as_a_category(monkeypatch):
    patches.patch_unique_values()
    calculation = column_statistics.UniqueValueCountCalculation
    original = calculation.original_all_unique_values
    monkeypatch.setattr(calculation, "_all_unique_values", original)
    metric = column_statistics.UniqueValueCount(column="default")
    values = original(calculation(metric.get_metric_id(), metric), _dataset(), None)
    assert any(pd.isna(v) for v in values), values


def test_the_eda_report_lists_the_real_categories_and_the_missing_count():
    rows = 40
    frame = pd.DataFrame({name: [None] * rows for name in BANK.features})
    for name in BANK.numeric:
        frame[name] = np.arange(rows, dtype=float)
    for name in BANK.categorical:
        frame[name] = pd.Series([BANK.categorical[name].categories[0]] * rows, dtype=object)
    frame["default"] = pd.Series(["no"] * 30 + [np.nan] * 8 + ["yes"] * 2, dtype=object)
    frame[TARGET] = [0, 1] * (rows // 2)
    html = reports.eda_snapshot(frame, BANK).get_html_str(as_iframe=False)
    start = html.index('"params": {"header": "default"')
    widget = json.loads("{" + html[start:html.index(', "graph"', start)] + "}}")["params"]
    labels = {m["label"]: m["values"][0] for m in widget["metrics"]}
    assert set(labels) == {"count", "missing", "no", "yes"}, labels
    assert re.match(r"8\.00 \(20\.00%\)", labels["missing"]), labels


def _summary_table(html: str) -> dict:
    start = html.index('"params": {"header": ["Metric", "Current"]')
    end = html.index("]]}", start)
    table = json.loads("{" + html[start:end] + "]]}}")["params"]
    return dict(table["data"])


def test_the_eda_summary_names_no_column_it_does_not_have():
    """Evidently 0.7's summary table lists "target column None" (and id, prediction, date)
    where the data definition has none: the EDA has a label but no prediction."""
    rows = 40
    frame = pd.DataFrame({name: np.arange(rows, dtype=float) for name in BANK.numeric})
    for name in BANK.categorical:
        frame[name] = pd.Series([BANK.categorical[name].categories[0]] * rows, dtype=object)
    frame[TARGET] = [0, 1] * (rows // 2)
    summary = _summary_table(reports.eda_snapshot(frame, BANK).get_html_str(as_iframe=False))
    assert summary["number of rows"] == str(rows), summary
    assert "None" not in summary.values(), summary
    assert not {"id column", "target column", "prediction column", "date column"} & set(summary)


def test_evidently_still_lists_unset_columns_as_none():
    from evidently.legacy.metrics.data_integrity import dataset_summary_metric as summary

    patches.patch_summary_table()
    renderer = summary.DatasetSummaryMetricRenderer
    result = summary.DatasetSummaryMetricResult(
        almost_duplicated_threshold=0.95, current=summary.DatasetSummary(
            target=None, prediction=None, date_column=None, id_column=None,
            number_of_columns=1, number_of_rows=2, number_of_missing_values=0,
            number_of_categorical_columns=1, number_of_numeric_columns=0,
            number_of_text_columns=0, number_of_datetime_columns=0,
            number_of_constant_columns=0, number_of_almost_constant_columns=0,
            number_of_duplicated_columns=0, number_of_almost_duplicated_columns=0,
            number_of_empty_rows=0, number_of_empty_columns=0,
            number_of_duplicated_rows=0, columns_type_data={}, nans_by_columns={},
            number_uniques_by_columns={}))
    rows = dict(renderer.original_get_table(result).params["data"])
    assert rows["target column"] == "None", rows
