"""The two changes the reports make to Evidently's internals, behind a version check.

1. Evidently 0.7's ``UniqueValueCountCalculation._all_unique_values``
(evidently/metrics/column_statistics.py) takes a column's values with ``Series.unique()``,
which keeps NaN, and then counts them with ``value_counts(dropna=True)``, which does not: every
category column with a missing value gets a category "nan" (or "None") counted 0, listed in
the EDA report beside the real "missing" row (Bank's `default`, `housing`, `loan`).
``_known_values`` is the same method without the missing value; the "missing" row and the
missing-value metrics the dashboard plots are unchanged.

2. Evidently 0.7's data summary table (``DatasetSummaryMetricRenderer._get_table``, legacy
``dataset_summary_metric.py``) lists "id column", "target column", "prediction column" and
"date column" with the value None where the data definition has none: an EDA of labelled rows
without a prediction said "target column None" (Evidently knows a target only within a
classification task, which needs a prediction). ``_table_of_set_columns`` leaves those rows
out; the report's name says which column is the label.

``tests/unit/test_report_patches.py`` runs Evidently's own methods and fails once either is no
longer needed: then that patch goes.
"""

from __future__ import annotations

PATCHED_VERSIONS = ("0.7.",)  # the versions whose method _known_values mirrors


def _known_values(self, current, reference) -> set:
    values = set(current.as_dataframe()[self.metric.column].dropna().unique())
    if reference is not None:
        values.update(reference.as_dataframe()[self.metric.column].dropna().unique())
    return values


def patch_unique_values() -> bool:
    """Apply the fix if this Evidently is one it was made for; True if applied."""
    import evidently
    from evidently.metrics import column_statistics

    if not evidently.__version__.startswith(PATCHED_VERSIONS):
        return False
    calculation = column_statistics.UniqueValueCountCalculation
    if calculation._all_unique_values is not _known_values:
        calculation.original_all_unique_values = calculation._all_unique_values
        calculation._all_unique_values = _known_values
    return True


_ROLES = ("id column", "target column", "prediction column", "date column")


def _table_of_set_columns(metric_result):
    widget = _table_of_set_columns.original(metric_result)
    widget.params["data"] = [row for row in widget.params["data"]
                             if not (row[0] in _ROLES and set(row[1:]) == {"None"})]
    return widget


def patch_summary_table() -> bool:
    """Leave unset columns out of the data summary table; True if applied."""
    import evidently
    from evidently.legacy.metrics.data_integrity import dataset_summary_metric

    if not evidently.__version__.startswith(PATCHED_VERSIONS):
        return False
    renderer = dataset_summary_metric.DatasetSummaryMetricRenderer
    if renderer._get_table is not _table_of_set_columns:
        renderer.original_get_table = _table_of_set_columns.original = renderer._get_table
        renderer._get_table = staticmethod(_table_of_set_columns)
    return True
