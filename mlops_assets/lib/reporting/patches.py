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

PATCHED_VERSIONS = ("0.7.",)  # the versions whose methods these mirror


def _swap(owner: type, name: str, replacement, static: bool = False) -> bool:
    """``owner.name`` replaced by ``replacement`` (the original kept as
    ``owner.original_<name without its underscore>``) if this Evidently is one the patch was
    made for; idempotent. True if the patch is in place."""
    import evidently

    if not evidently.__version__.startswith(PATCHED_VERSIONS):
        return False
    current = getattr(owner, name)
    if current is not replacement:
        setattr(owner, f"original{name}", current)
        setattr(owner, name, staticmethod(replacement) if static else replacement)
    return True


def _known_values(self, current, reference) -> set:
    values = set(current.as_dataframe()[self.metric.column].dropna().unique())
    if reference is not None:
        values.update(reference.as_dataframe()[self.metric.column].dropna().unique())
    return values


def patch_unique_values() -> bool:
    """No category "nan" counted 0 beside the "missing" row; True if applied."""
    from evidently.metrics import column_statistics

    return _swap(column_statistics.UniqueValueCountCalculation, "_all_unique_values",
                 _known_values)


_ROLES = ("id column", "target column", "prediction column", "date column")


def _table_of_set_columns(metric_result):
    from evidently.legacy.metrics.data_integrity import dataset_summary_metric

    original = dataset_summary_metric.DatasetSummaryMetricRenderer.original_get_table
    widget = original(metric_result)
    widget.params["data"] = [row for row in widget.params["data"]
                             if not (row[0] in _ROLES and set(row[1:]) == {"None"})]
    return widget


def patch_summary_table() -> bool:
    """Leave unset columns out of the data summary table; True if applied."""
    from evidently.legacy.metrics.data_integrity import dataset_summary_metric

    return _swap(dataset_summary_metric.DatasetSummaryMetricRenderer, "_get_table",
                 _table_of_set_columns, static=True)
