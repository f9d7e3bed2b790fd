"""The dataset contract and the project's paths.

A contract is a YAML file (``mlops_assets/contracts/<name>.yaml`` or any path) that says
everything the pipeline needs to know about a dataset: where it comes from, its target, how to
cut it into periods, which columns are categorical or numeric and their domains, what leaks the
label, what is personal data. Nothing else in the code names a dataset's columns.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
DATA_DIR = PROJECT_ROOT / "data"

# Columns the pipeline adds to every row. They are never features.
ROW_KEY = "_row_key"
BATCH = "_batch"
PERIOD = "_period"
SPLIT = "_split"
TARGET = "_target"  # the label as 0/1
SPLITS = ("train", "validation", "test")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    files: list[str] = Field(min_length=1, description="file names under data/, read in order")
    separator: str = ","
    header: bool = True
    comment: str | None = None
    column_names: list[str] | None = None

    @model_validator(mode="after")
    def _names_without_header(self) -> SourceSpec:
        if not self.header and not self.column_names:
            raise ValueError("source.column_names is required when source.header is false")
        return self


class TargetSpec(_Strict):
    column: str
    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(min_length=1)


class PeriodSpec(_Strict):
    kind: Literal["month_wrap", "row_chunks"]
    month_column: str | None = None
    start_year: int | None = None
    rows_per_batch: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> PeriodSpec:
        if self.kind == "month_wrap" and (self.month_column is None or self.start_year is None):
            raise ValueError("period kind month_wrap needs month_column and start_year")
        if self.kind == "row_chunks" and self.rows_per_batch is None:
            raise ValueError("period kind row_chunks needs rows_per_batch")
        return self


class CategoricalSpec(_Strict):
    categories: list[str] = Field(min_length=1)
    nullable: bool = False
    description: str | None = None


class NumericSpec(_Strict):
    min: float
    max: float
    nullable: bool = False
    sentinel: float | None = Field(
        default=None, description="a value that means 'not applicable'; becomes missing"
    )
    description: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> NumericSpec:
        if self.min > self.max:
            raise ValueError(f"numeric bounds out of order: min {self.min} > max {self.max}")
        return self


class AgeBands(_Strict):
    column: str
    edges: list[float] = Field(min_length=2)


class DatasetContract(_Strict):
    """Everything the pipeline knows about one dataset."""

    name: str
    title: str
    source: SourceSpec
    target: TargetSpec
    period: PeriodSpec
    missing_tokens: list[str] = Field(default_factory=list)
    drop_columns: list[str] = Field(default_factory=list)
    pii_columns: dict[str, Literal["hash", "drop"]] = Field(default_factory=dict)
    categorical: dict[str, CategoricalSpec]
    numeric: dict[str, NumericSpec]
    slices: list[str] = Field(default_factory=list)
    age_bands: AgeBands | None = None
    max_invalid_fraction: float = Field(
        default=0.05, ge=0, le=1, description="above this share of bad rows a batch is rejected"
    )
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetContract:
        overlap = set(self.categorical) & set(self.numeric)
        if overlap:
            raise ValueError(f"columns both categorical and numeric: {sorted(overlap)}")
        features = set(self.features)
        for name in [self.target.column, *self.drop_columns, *self.pii_columns]:
            if name in features:
                raise ValueError(f"column {name!r} is a feature and also target/dropped/PII")
        if self.period.kind == "month_wrap" and self.period.month_column not in self.categorical:
            raise ValueError(f"period.month_column {self.period.month_column!r} not categorical")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9:
            raise ValueError(f"split_fractions must sum to 1, got {self.split_fractions}")
        if self.age_bands and self.age_bands.column not in self.numeric:
            raise ValueError(f"age_bands.column {self.age_bands.column!r} is not numeric")
        return self

    @cached_property
    def features(self) -> list[str]:
        """Feature columns in the fixed order the model sees them."""
        return [*self.categorical, *self.numeric]

    @cached_property
    def category_codes(self) -> dict[str, dict[str, float]]:
        """Each categorical column's value -> its code in the fixed category order."""
        return {
            name: {c: float(i) for i, c in enumerate(spec.categories)}
            for name, spec in self.categorical.items()
        }

    def describe(self, column: str) -> str | None:
        """What the contract says about a column, in a sentence (the UI's column table)."""
        if column in self.categorical:
            spec = self.categorical[column]
            shown = ", ".join(spec.categories[:6]) + (", ..." if len(spec.categories) > 6 else "")
            text = (f"categorical, {len(spec.categories)} categories ({shown})"
                    + ("; may be missing" if spec.nullable else ""))
        elif column in self.numeric:
            spec = self.numeric[column]
            text = (f"numeric in [{spec.min:g}, {spec.max:g}]"
                    + (f"; {spec.sentinel:g} means not applicable" if spec.sentinel is not None
                       else "") + ("; may be missing" if spec.nullable else ""))
        elif column in (TARGET, self.target.column):
            return (f"label {self.target.column!r}: 1 = {'/'.join(self.target.positive)}, "
                    f"0 = {'/'.join(self.target.negative)}")
        else:
            return None
        return f"{spec.description}; {text}" if spec.description else text

    @property
    def expected_columns(self) -> list[str]:
        """Columns a landed batch must carry (before dropping leakage and PII)."""
        return [*self.features, *self.drop_columns, *self.pii_columns, self.target.column]

    def source_paths(self, data_dir: Path = DATA_DIR) -> list[Path]:
        return [data_dir / name for name in self.source.files]


def load_contract(name_or_path: str) -> DatasetContract:
    """Load a contract by bundled name (``bank``, ``adult``) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONTRACTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        bundled = sorted(p.stem for p in CONTRACTS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"dataset contract {str(path)!r} not found; bundled: {bundled}")
    with path.open() as f:
        raw = yaml.safe_load(f)
    try:
        return DatasetContract.model_validate(raw)
    except ValueError as err:
        raise ValueError(f"invalid dataset contract {path}: {err}") from err


def default_home() -> Path:
    """Where the pipeline keeps its state (landing, backups, storage, models, reports)."""
    return Path(os.environ.get("MLOPS_HOME", PROJECT_ROOT / "var")).resolve()


class Paths:
    """The layout of a project home directory. One place decides where each artifact lives."""

    def __init__(self, home: Path | str):
        self.home = Path(home)

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def backup(self) -> Path:
        return self.home / "backup"

    @property
    def storage(self) -> Path:
        return self.home / "storage"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def evidently(self) -> Path:
        """The Evidently workspace every report is a snapshot in (served by `evidently ui`)."""
        return self.home / "evidently"

    @property
    def sealed_test(self) -> Path:
        return self.home / "sealed" / "test_row_keys.parquet"
