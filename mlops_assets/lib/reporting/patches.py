"""The one change the reports make to Evidently's internals, behind a version check.

Evidently 0.7's ``UniqueValueCountCalculation._all_unique_values``
(evidently/metrics/column_statistics.py) takes a column's values with ``Series.unique()``,
which keeps NaN, and then counts them with ``value_counts(dropna=True)``, which does not: every
category column with a missing value gets a category "nan" (or "None") counted 0, listed in
the EDA report beside the real "missing" row (Bank's `default`, `housing`, `loan`).
``_known_values`` is the same method without the missing value; the "missing" row and the
missing-value metrics the dashboard plots are unchanged.

``tests/unit/test_report_patches.py`` runs Evidently's own method and fails once it no longer
counts a missing value as a category: then this module goes.
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
