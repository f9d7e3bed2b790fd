"""A starter dataset contract inferred from a data file (``mlops-assets contract init``).

It guesses what a person would otherwise type by hand: each column's role and type, the
categories, numeric bounds with a margin, the missing-value tokens, the period, and the
target's positive label. What a guess cannot settle is listed for review: columns that look
like row ids, personal data or a leak of the label are set aside (dropped), never trained on
silently."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mlops_assets.config import ContractError, DatasetContract, load_contract
from mlops_assets.lib.dataset import data

MISSING_CANDIDATES = ["", "?", "NA", "N/A", "n/a", "na", "null", "NULL", "None", "none", "-",
                      "unknown", "Unknown", "nan", "NaN"]
POSITIVE_WORDS = ["1", "yes", "y", "true", "t", "positive", "pos", "churn", "default", "fraud",
                  "bad", ">50k", ">50k."]
PII_NAME = re.compile(r"(^|_)(e?mail|name|first_?name|last_?name|surname|phone|mobile|ssn|"
                      r"address|street|ip|ip_?address|passport|iban|birth_?date|dob)($|_)",
                      re.IGNORECASE)
MAX_CATEGORIES = 100  # more distinct text values than this: not a usable categorical
MAX_INT_CODES = 12  # whole numbers with at most this many values: integer-coded categories
LEAK_DROP_AUC = 0.95  # one column alone this predictive: dropped as a likely leak
LEAK_REVIEW_AUC = 0.80  # this predictive: kept, flagged for review


@dataclass
class Inferred:
    contract: dict
    review: list[str] = field(default_factory=list)  # what the user should check


def sniff_separator(path: Path) -> str:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(65536)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_text(path: Path, separator: str | None = None) -> pd.DataFrame:
    """A data file as text, the way ingestion will read it; a file that is not UTF-8 text
    (or Parquet) is named in the error, with the fix."""
    import pyarrow as pa

    try:
        if path.suffix == ".parquet":
            return data.as_text_frame(pd.read_parquet(path))
        sep = separator or sniff_separator(path)
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                           skipinitialspace=True).apply(lambda s: s.str.strip())
    except UnicodeDecodeError as err:
        raise ContractError(
            f"{path} is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at "
            f"offset {err.start}): if it is Latin-1, convert it with `iconv -f latin1 -t utf-8 "
            f"{path.name} > {path.stem}.utf8{path.suffix}`; if it is binary, export it as CSV "
            "or Parquet") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowInvalid, OSError) as err:
        raise ContractError(f"{path} cannot be read as a table: {err}") from err


def dataset_name(path: Path) -> str:
    """A contract name from a data file's name: ``Telco Churn.csv`` -> ``telco_churn``."""
    stem = path.name.split(".")[0]
    return re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "dataset"


def _labels(values: pd.Series, column: str, missing: set[str]) -> tuple[list[str], list[str],
                                                                           str]:
    present = values[~values.isin(missing)]
    counts = present.value_counts()
    if len(counts) != 2:
        shown = list(counts.index[:10])
        raise ContractError(f"target column {column!r} has {len(counts)} distinct labels "
                            f"{shown}: a binary classifier needs exactly 2")
    a, b = list(counts.index)
    words = [a.lower(), b.lower()]
    if words[0] in POSITIVE_WORDS and words[1] not in POSITIVE_WORDS:
        pos, why = a, "a positive word"
    elif words[1] in POSITIVE_WORDS and words[0] not in POSITIVE_WORDS:
        pos, why = b, "a positive word"
    else:
        pos, why = b, "the rarer label"  # value_counts: b is the less frequent
    neg = a if pos == b else b
    share = counts[pos] / counts.sum()
    return [pos], [neg], (f"target {column!r}: positive label {pos!r} ({why}, {share:.1%} of "
                          f"labelled rows), negative {neg!r}")


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    from mlops_assets.lib.evaluation import _fast_auc

    ok = ~np.isnan(score)
    if ok.sum() < 20 or len(np.unique(y[ok])) < 2:
        return 0.5
    auc = _fast_auc(y[ok], score[ok])
    return max(auc, 1 - auc)


def infer(path: Path, target: str, period: str | None = None,
          frequency: str | None = None, labels_path: Path | None = None,
          key: str | None = None, out_dir: Path | None = None) -> Inferred:
    """Infer a contract for ``path`` (CSV/TSV/Parquet). ``labels_path`` + ``key``: the labels
    come in a separate file, joined on ``key``."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found")
    separator = None if path.suffix == ".parquet" else sniff_separator(path)
    df = read_text(path, separator)
    review: list[str] = []
    if labels_path is not None:
        if key is None:
            raise ContractError("--labels needs --key: the column the rows and the labels share")
        label_frame = read_text(Path(labels_path).resolve())
        for col, where in ((key, path), (key, labels_path), (target, labels_path)):
            frame = df if where == path else label_frame
            if col not in frame.columns:
                raise ContractError(f"column {col!r} is not in {where} (columns: "
                                    f"{list(frame.columns)[:20]})")
        repeated = int(label_frame[key].duplicated().sum())
        if repeated:  # one label per row, or the join would multiply rows
            review.append(f"{labels_path}: {repeated} key(s) labelled more than once (e.g. "
                          f"{label_frame.loc[label_frame[key].duplicated(), key].iloc[0]!r}): "
                          "the last label of each is used")
            label_frame = label_frame.drop_duplicates(key, keep="last")
        joined = df[[key]].merge(label_frame[[key, target]], on=key, how="left")
        target_values = joined[target].fillna("")
    else:
        if target not in df.columns:
            raise ContractError(f"target column {target!r} is not in {path} (columns: "
                                f"{list(df.columns)[:20]})")
        target_values = df[target]
    if period is not None and period not in df.columns:
        raise ContractError(f"period column {period!r} is not in {path} (columns: "
                            f"{list(df.columns)[:20]})")
    found_missing = sorted({t for t in MISSING_CANDIDATES if t
                            and (df == t).to_numpy().any()})
    missing = {"", *found_missing}
    if found_missing:
        review.append(f"missing-value tokens found: {found_missing} (they become missing "
                      "values; remove any that is a real value)")
    positive, negative, why = _labels(target_values, target, missing)
    review.append(why)
    y = target_values.map({positive[0]: 1, negative[0]: 0}).to_numpy(float)
    labelled = ~np.isnan(y)

    categorical: dict[str, dict] = {}
    numeric: dict[str, dict] = {}
    drop: list[str] = []
    pii: dict[str, str] = {}
    skip = {target, key} if labels_path is None else {key}
    for col in df.columns:
        if col in skip:
            continue
        values = df[col]
        present = values[~values.isin(missing)]
        nullable = len(present) < len(values)
        if len(present) == 0:
            drop.append(col)
            review.append(f"{col!r}: always missing: dropped")
            continue
        if PII_NAME.search(col):
            pii[col] = "drop"
            review.append(f"{col!r}: the name suggests personal data: dropped (pii_columns; "
                          "'hash' keeps it as a hashed value)")
            continue
        numbers = pd.to_numeric(present, errors="coerce")
        is_number = numbers.notna().mean() >= 0.99
        whole = is_number and bool((numbers.dropna() % 1 == 0).all())
        distinct = present.nunique()
        looks_id = distinct >= 0.95 * len(present) and len(present) >= 50 and (
            not is_number or whole)
        if col == period:
            drop.append(col)
            review.append(f"{col!r}: the period column: cuts the data into batches; not "
                          "trained on (a model would extrapolate it), dropped")
            continue
        if looks_id:
            drop.append(col)
            review.append(f"{col!r}: a distinct value on nearly every row: looks like an id: "
                          "dropped (make it key_column if labels join on it)")
            continue
        if is_number and not (whole and distinct <= MAX_INT_CODES):
            x = pd.to_numeric(values.where(~values.isin(missing)), errors="coerce").to_numpy()
            infinite = int(np.isinf(x).sum())
            if infinite:  # outside any range: such rows are quarantined at ingestion
                review.append(f"{col!r}: {infinite} infinite value(s) (e.g. "
                              f"{values[np.isinf(x)].iloc[0]!r}): no bound holds them, so "
                              "those rows will be quarantined")
                x = np.where(np.isinf(x), np.nan, x)
            lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
            margin = max((hi - lo) * 0.1, 1.0 if whole else 0.0)
            floor = lo - margin if lo < 0 or lo - margin >= 0 else 0.0  # >= 0 stays >= 0
            spec = {"min": _round(floor, whole), "max": _round(hi + margin, whole)}
            if nullable:
                spec["nullable"] = True
            numeric[col] = spec
            score = _auc(x[labelled], y[labelled])
        else:
            if distinct > MAX_CATEGORIES:
                drop.append(col)
                review.append(f"{col!r}: {distinct} distinct text values: too many for a "
                              "category: dropped (bucket it, or make it a number)")
                continue
            cats = sorted(present.unique(), key=lambda v: (float(v) if whole else 0, v))
            spec = {"categories": cats}
            if nullable:
                spec["nullable"] = True
            categorical[col] = spec
            score = 0.5  # judged only with enough rows per category to be no fluke
            if labelled.sum() >= 30 * distinct:
                rate = pd.Series(y[labelled]).groupby(values[labelled].to_numpy()).mean()
                score = _auc(values[labelled].map(rate).to_numpy(float), y[labelled])
        if score > LEAK_DROP_AUC:
            (numeric if col in numeric else categorical).pop(col)
            drop.append(col)
            review.append(f"{col!r}: predicts the label almost alone (AUC {score:.3f}): may "
                          "leak it (known only after the outcome?): dropped; put it back if "
                          "it is known at prediction time")
        elif col in categorical and whole:
            review.append(f"{col!r}: whole numbers with {distinct} values: taken as an "
                          "integer-coded category (move it to numeric if order matters)")
        if col not in drop and score > LEAK_REVIEW_AUC:
            review.append(f"{col!r}: a strong predictor alone (AUC {score:.3f}): kept, but "
                          "check it is known when a prediction is made (else drop it: it "
                          "leaks the label)")
    if not categorical and not numeric:
        raise ContractError(f"{path}: no usable feature columns")
    name = dataset_name(path)
    out_dir = Path(out_dir or path.parent).resolve()
    source: dict = {"files": [_relative(path, out_dir)]}
    if separator:
        source["separator"] = separator
    if labels_path is not None:
        source["label_files"] = [_relative(Path(labels_path).resolve(), out_dir)]
    contract: dict = {"name": name, "title": f"{path.name} (inferred by contract init)",
                      "source": source,
                      "target": {"column": target, "positive": positive, "negative": negative}}
    if period is not None:
        contract["period"] = {"column": period, **({"frequency": frequency} if frequency
                                                   else {})}
    else:
        rows = max(-(-len(df) // 12), 1)  # ceil: 12 batches, the last one shorter
        contract["period"] = {"kind": "row_chunks", "rows_per_batch": rows}
        review.append(f"no --period: rows cut in order into chunks of {rows} (12 batches); "
                      "give a date, year or integer column with --period if the data has one")
    contract["missing_tokens"] = found_missing
    if key is not None:
        contract["key_column"] = key
    contract |= {"drop_columns": drop, "pii_columns": pii, "categorical": categorical,
                 "numeric": numeric,
                 "slices": [c for c, s in categorical.items() if 2 <= len(s["categories"]) <= 10
                            ][:3]}
    review.append(f"slices judged by the gate: {contract['slices']} (edit `slices`)")
    return Inferred(contract, review)


def _round(v: float, whole: bool) -> float | int:
    return int(np.floor(v)) if whole and v < 0 else int(np.ceil(v)) if whole else round(v, 6)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def write(inferred: Inferred, out: Path) -> DatasetContract:
    """Write the contract with the review list on top, then load it back (so what is
    written is known to be a valid contract)."""
    header = "\n".join(["# Inferred by `mlops-assets contract init`. Review before use:",
                        *(f"#  - {line}" for line in inferred.review), ""])
    body = yaml.safe_dump(inferred.contract, sort_keys=False, allow_unicode=True, width=100)
    from mlops_assets.lib import io

    io.write_text(Path(out), header + body)
    return load_contract(str(out))
