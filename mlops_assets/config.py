"""The dataset contract and the project's paths.

A contract is a YAML file (``mlops_assets/contracts/<name>.yaml`` or any path) that says
everything the pipeline needs to know about a dataset: where it comes from, its target, how to
cut it into periods, which columns are categorical or numeric and their domains, what leaks the
label, what is personal data. Nothing else in the code names a dataset's columns.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
DATA_DIR = PROJECT_ROOT / "data"

# Columns the pipeline adds to every row. They are never features.
ROW_KEY = "_row_key"
BATCH = "_batch"
PERIOD = "_period"
SPLIT = "_split"
TARGET = "_target"  # the label as 0/1; missing while a row's label has not arrived
KEY = "_key"  # the contract's key column (a row id label files join on), as text
# A hash of a row's content (features and label): what decides its split, duplicates and
# sealing, whichever file carried the row (lib/dataset/split.py).
CONTENT = "_content"
VERSION = "_version"  # the stored version (run) of a batch, in the sealed manifest
SPLITS = ("train", "validation", "test")
# What the columns the pipeline adds mean (the UI's column tables).
BOOKKEEPING = {
    ROW_KEY: "the row's id: <batch>:<row number in its file>",
    BATCH: "the landed batch (file) the row came in",
    PERIOD: "the period the row belongs to (the contract's period column or row chunk)",
    SPLIT: "train, validation or test: a hash of the row's content, sealed once",
    CONTENT: "a hash of the row's features and label: the same row under any name",
    KEY: "the contract's key column, as text (delayed labels join on it)",
}
RESERVED_COLUMNS = frozenset({ROW_KEY, BATCH, PERIOD, SPLIT, TARGET, KEY, CONTENT, VERSION,
                              "reason"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def as_text(value):
    """A category or label value as the text it is in a CSV file: 1 and 1.0 are "1"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int | float) else value


def _texts(values):
    return [as_text(v) for v in values] if isinstance(values, list) else values


class SourceSpec(_Strict):
    files: list[str] = Field(
        min_length=1, description="delimited text or Parquet (.parquet) files, read in order; "
        "a relative path is relative to the contract file's folder")
    label_files: list[str] = Field(
        default_factory=list, description="labels delivered apart from the rows: files with "
        "the key column and the target, dropped into feedback/ by `demo` and `land`")
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

    _text = field_validator("positive", "negative", mode="before")(_texts)


FREQUENCIES = {"year": "Y", "quarter": "Q", "month": "M", "week": "W", "day": "D"}


class PeriodSpec(_Strict):
    """How rows are cut into periods (batches, drift windows, backtest steps): by a column of
    the data (``{column: year}``: a date, datetime, year or integer; dates grouped by
    ``frequency``), by a month name that wraps around each year, or in chunks of rows."""

    kind: Literal["column", "month_wrap", "row_chunks"] = "column"
    column: str | None = None
    frequency: Literal["year", "quarter", "month", "week", "day"] | None = Field(
        default=None, description="for a date column (default month); none for numbers")
    month_column: str | None = None
    start_year: int | None = None
    rows_per_batch: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> PeriodSpec:
        if self.kind == "column" and self.column is None:
            raise ValueError("period needs a column (period: {column: <name>}), or kind "
                             "month_wrap / row_chunks")
        if self.kind == "month_wrap" and (self.month_column is None or self.start_year is None):
            raise ValueError("period kind month_wrap needs month_column and start_year")
        if self.kind == "row_chunks" and self.rows_per_batch is None:
            raise ValueError("period kind row_chunks needs rows_per_batch")
        return self


class GateSpec(_Strict):
    """The promotion gate's thresholds for this dataset (launchpad config can override)."""

    min_auc: float = Field(default=0.70, ge=0, le=1)
    auc_margin: float = Field(default=0.02, ge=0)
    log_loss_margin: float = Field(default=0.02, ge=0)
    recent_periods: int = Field(default=3, ge=1)
    min_comparison_rows: int = Field(default=1000, ge=0)
    max_slice_gap: float = Field(default=0.10, ge=0, description="error-rate gap between "
                                 "slices of a protected column, beyond sampling error")
    max_slice_drop: float = Field(default=0.05, ge=0, description="how much a slice's AUC "
                                  "may fall against the champion's (upper 95% bound)")
    n_bootstrap: int = Field(default=500, ge=50)


class TrainingBudget(_Strict):
    n_trials: int = Field(default=20, ge=1, description="hyperparameter search trials")
    threshold_rule: str = Field(
        default="max_f1",
        pattern=r"^(max_f1|(fixed|min_recall|cost):(0|[1-9][0-9]*)?(\.[0-9]+)?)$",
        description="how each new version's decision threshold is derived: max_f1, "
                    "fixed:<p>, min_recall:<r>, or cost:<r> (a missed positive costs r false "
                    "alarms)")

    @field_validator("threshold_rule")
    @classmethod
    def _rule_value(cls, rule: str) -> str:
        kind, _, value = rule.partition(":")
        if kind == "max_f1":
            return rule
        if value in ("", "."):
            raise ValueError(f"{rule!r}: {kind} needs a number, e.g. {kind}:0.5")
        x = float(value)
        bounds = {"fixed": (0 < x < 1, "in (0, 1)"), "min_recall": (0 < x <= 1, "in (0, 1]"),
                  "cost": (x > 0, "above 0")}[kind]
        if not bounds[0]:
            raise ValueError(f"{rule!r}: the {kind} value must be {bounds[1]}")
        return rule


class CategoricalSpec(_Strict):
    categories: list[str] = Field(min_length=1)
    nullable: bool = False
    description: str | None = None

    _text = field_validator("categories", mode="before")(_texts)

    @field_validator("categories")
    @classmethod
    def _distinct(cls, categories: list[str]) -> list[str]:
        repeated = sorted({c for c in categories if categories.count(c) > 1})
        if repeated:
            raise ValueError(f"categories repeat {repeated}: each value has one code")
        return categories


class NumericSpec(_Strict):
    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)
    nullable: bool = False
    sentinel: float | None = Field(
        default=None, allow_inf_nan=False,
        description="a value that means 'not applicable'; becomes missing"
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

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"age band edges must increase, got {edges}")
        return edges


class DatasetContract(_Strict):
    """Everything the pipeline knows about one dataset."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="lower-case letters, "
                      "digits, '_', '-', '.': it names model versions and folders")
    title: str
    source: SourceSpec
    target: TargetSpec
    period: PeriodSpec
    missing_tokens: list[str] = Field(default_factory=list)
    key_column: str | None = Field(
        default=None, description="a row id (never a feature): label files join on it")
    drop_columns: list[str] = Field(default_factory=list)
    pii_columns: dict[str, Literal["hash", "drop"]] = Field(default_factory=dict)
    categorical: dict[str, CategoricalSpec]
    numeric: dict[str, NumericSpec]
    slices: list[str] = Field(default_factory=list)
    protected: list[str] = Field(
        default_factory=list, description="slices (of `slices`) whose error rates the gate "
        "compares with each other: a disparity beyond sampling error blocks promotion")
    age_bands: AgeBands | None = None
    max_invalid_fraction: float = Field(
        default=0.05, ge=0, le=1, description="above this share of bad rows a batch is rejected"
    )
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    gate: GateSpec = Field(default_factory=GateSpec)
    training: TrainingBudget = Field(default_factory=TrainingBudget)

    _text = field_validator("missing_tokens", mode="before")(_texts)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetContract:
        problems = cross_field_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def features(self) -> list[str]:
        """Feature columns in the fixed order the model sees them."""
        return [*self.categorical, *self.numeric]

    @cached_property
    def label_codes(self) -> dict[str, int]:
        """Each label value in the data -> 1 (positive) or 0 (negative)."""
        return ({v: 1 for v in self.target.positive}
                | {v: 0 for v in self.target.negative})

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
            return BOOKKEEPING.get(column)
        return f"{spec.description}; {text}" if spec.description else text

    @property
    def expected_columns(self) -> list[str]:
        """Columns a landed batch must carry (before dropping leakage and PII)."""
        # With labels delivered apart, the rows may come without the target column.
        return [*self.features, *self.drop_columns, *self.pii_columns,
                *([self.key_column] if self.key_column else []),
                *([] if self.source.label_files else [self.target.column])]

    def source_paths(self, data_dir: Path = DATA_DIR) -> list[Path]:
        """The source files: absolute as given, else under ``data_dir`` (bundled datasets;
        ``load_contract`` makes a user contract's relative paths absolute)."""
        return [Path(name) if Path(name).is_absolute() else data_dir / name
                for name in self.source.files]

    def label_paths(self, data_dir: Path = DATA_DIR) -> list[Path]:
        return [Path(name) if Path(name).is_absolute() else data_dir / name
                for name in self.source.label_files]


def cross_field_problems(raw: dict) -> list[str]:
    """What only makes sense together in a contract, as a list of problems. Works on the
    raw mapping too (wrong types are the field checks' business and are skipped here), so
    that a contract with both kinds of problem is told all of them at once."""
    def mapping(value) -> dict:
        return value if isinstance(value, dict) else {}

    def names(value) -> list[str]:
        return [v for v in value if isinstance(v, str)] if isinstance(value, list | dict) \
            else []

    problems = []
    categorical, numeric = mapping(raw.get("categorical")), mapping(raw.get("numeric"))
    features = [*categorical, *numeric]
    target, period = mapping(raw.get("target")), mapping(raw.get("period"))
    source, age_bands = mapping(raw.get("source")), mapping(raw.get("age_bands"))
    key = raw.get("key_column")
    others = [target.get("column"), *names(raw.get("drop_columns", [])),
              *names(raw.get("pii_columns", {})), *([key] if key else [])]
    overlap = set(categorical) & set(numeric)
    if overlap:
        problems.append(f"columns both categorical and numeric: {sorted(overlap)}")
    for name in others:
        if name in features:
            problems.append(f"column {name!r} is a feature and also target/dropped/PII/key")
    reserved = sorted({c for c in [*features, *others] if c in RESERVED_COLUMNS})
    if reserved:
        problems.append(f"column(s) {reserved} collide with the pipeline's own columns "
                        f"{sorted(RESERVED_COLUMNS)}: rename them in the data")
    both = set(_texts(names(target.get("positive", [])))) \
        & set(_texts(names(target.get("negative", []))))
    if both:
        problems.append(f"target labels {sorted(both)} are both positive and negative")
    if key and key == target.get("column"):
        problems.append(f"key_column {key!r} is the target column")
    kind = period.get("kind", "column")
    if kind == "month_wrap" and period.get("month_column") not in categorical:
        problems.append(f"period.month_column {period.get('month_column')!r} not categorical")
    if kind == "column" and period.get("column") and period.get("column") == target.get(
            "column"):
        problems.append(f"period.column {period.get('column')!r} is the target column")
    slices = names(raw.get("slices", []))
    unknown = [s for s in slices if s not in categorical and not (s == "age_band" and
                                                                 age_bands)]
    if unknown:
        problems.append(f"slices {unknown} are not categorical columns (or age_band with "
                        "age_bands set)")
    protected = set(names(raw.get("protected", [])))
    if protected - set(slices):
        problems.append(f"protected {sorted(protected - set(slices))} must also be listed "
                        "in slices")
    if source.get("label_files") and not key:
        problems.append("source.label_files needs key_column: the column both the rows and "
                        "the label files carry")
    fractions = raw.get("split_fractions", (0.70, 0.15, 0.15))
    if isinstance(fractions, list | tuple) and len(fractions) == 3 \
            and all(isinstance(f, int | float) for f in fractions):
        if not all(math.isfinite(f) and 0 <= f <= 1 for f in fractions) \
                or fractions[0] <= 0 or fractions[2] <= 0:
            problems.append(f"split_fractions (train, validation, test) must each lie in "
                            f"[0, 1], train and test above 0, got {list(fractions)}")
        elif abs(sum(fractions) - 1.0) > 1e-9:
            problems.append(f"split_fractions must sum to 1, got {list(fractions)}")
    if age_bands and age_bands.get("column") not in numeric:
        problems.append(f"age_bands.column {age_bands.get('column')!r} is not numeric")
    return problems


class ContractError(ValueError):
    """A contract that cannot be used; the message names the file, the key and the fix."""


def _explain(err: ValidationError, raw: dict | None = None) -> str:
    lines = []
    for e in err.errors()[:20]:
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? see the bundled contracts for the keys)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict | list) \
            else f" (got {got!r})"
        if e["loc"]:  # the cross-field checks come whole from the raw mapping below
            lines.append(f"  {where}: {msg}{shown}")
    more = len(err.errors()) - 20
    lines += [f"  ... and {more} more"] if more > 0 else []
    lines += [f"  {p}" for p in cross_field_problems(raw or {})]
    return "\n".join(lines)


def load_contract(name_or_path: str) -> DatasetContract:
    """Load a contract by bundled name (``bank``, ``adult``) or by path to a YAML file. A
    file's relative ``source.files`` are resolved against the file's folder; a bundled
    contract's against the package's data folder."""
    path = Path(name_or_path)
    bundled = not path.suffix
    if bundled:
        path = CONTRACTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONTRACTS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"dataset contract {str(path)!r} not found; bundled: {names}; "
                                "or write one: mlops-assets contract init DATA_FILE --target COL")
    text = path.read_text()
    try:  # libyaml: 0.5 ms, not 4.4 (a run's steps load the contract ~16 times)
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        try:  # Python's parser says more of what is wrong, and where
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ContractError(f"dataset contract {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ContractError(f"dataset contract {path}: expected a mapping of keys, got "
                            f"{type(raw).__name__}")
    source = raw.get("source")
    if not bundled and isinstance(source, dict):
        folder = path.resolve().parent
        for key in ("files", "label_files"):
            if isinstance(source.get(key), list):
                source[key] = [str(folder / f) if not Path(str(f)).is_absolute() else str(f)
                               for f in source[key]]
    try:
        return DatasetContract.model_validate(raw)
    except ValidationError as err:
        raise ContractError(f"dataset contract {path} is invalid:\n{_explain(err, raw)}") from None


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
    def scoring_landing(self) -> Path:
        """Files of unlabeled rows to be scored by the champion (one partition each)."""
        return self.home / "scoring" / "landing"

    @property
    def scored(self) -> Path:
        return self.home / "scoring" / "scored"

    @property
    def predictions(self) -> Path:
        """The prediction log (the service's and the batch scoring's)."""
        return self.home / "predictions"

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
