"""Datasets built for the bring-your-own-data tests: shapes the bundled ones do not have.

- ``integer_coded``: CSV, categories coded as integers, a date column as the period, "?" for
  missing values, an id column, an e-mail column and a column that leaks the label (each to
  be flagged), a label 0/1.
- ``parquet_years``: Parquet with a ``year`` period column and typed columns (ints, floats
  with gaps, text), its labels ("yes"/"no") in a separate Parquet file joined on ``id``.
Both have a real signal (a logistic model of the features) so a model can pass the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _labels(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(int)


def integer_coded(folder: Path, rows: int = 6000, months: int = 6) -> Path:
    rng = np.random.default_rng(7)
    plan = rng.integers(1, 6, rows)  # 1..5
    region = rng.choice([10, 20, 30], rows)
    usage = rng.gamma(2.0, 30.0, rows)
    tenure = rng.integers(0, 120, rows)
    logit = -1.0 + 0.6 * (plan - 3) + 0.8 * (region == 30) + 0.02 * (usage - 60) \
        - 0.01 * tenure
    day = np.sort(rng.integers(0, months * 30, rows))
    frame = pd.DataFrame({
        "customer_id": np.arange(100000, 100000 + rows),
        "signup_date": (pd.Timestamp("2021-01-01") + pd.to_timedelta(day, "D")).strftime(
            "%Y-%m-%d"),
        "plan": plan.astype(str),
        "region": region.astype(str),
        "usage": usage.round(2).astype(str),
        "tenure": tenure.astype(str),
        "email": [f"user{i}@example.com" for i in range(rows)],
        "churned": _labels(rng, logit).astype(str),
    })
    # Recorded after the outcome: the label with 3% noise (a leak contract init must catch).
    leak = frame["churned"].astype(int) ^ (rng.random(rows) < 0.03)
    frame.insert(6, "closing_fee", np.where(leak == 1, 25.0, 0.0).astype(str))
    frame.loc[rng.random(rows) < 0.02, "usage"] = "?"
    path = Path(folder) / "telco.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def parquet_years(folder: Path, rows: int = 6000, years: int = 6) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    year = np.sort(rng.integers(2015, 2015 + years, rows))
    grade = rng.integers(1, 5, rows)  # integer-coded, typed int64 in Parquet
    income = rng.lognormal(10, 0.5, rows)
    income[rng.random(rows) < 0.03] = np.nan  # gaps: float column with missing values
    sector = rng.choice(["retail", "energy", "tech", "health"], rows)
    logit = -0.5 + 0.7 * (grade - 2.5) + 1.0 * (sector == "tech") \
        + 0.8 * np.nan_to_num(np.log(income) - 10)
    ids = [f"r{i:06d}" for i in rng.permutation(rows)]
    features = pd.DataFrame({"id": ids, "year": year, "grade": grade, "income": income,
                             "sector": sector})
    labels = pd.DataFrame({"id": ids, "label": np.where(_labels(rng, logit) == 1, "yes", "no")})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    features.to_parquet(folder / "loans.parquet", index=False)
    labels.sample(frac=1.0, random_state=1).to_parquet(folder / "loan_labels.parquet",
                                                        index=False)
    return folder / "loans.parquet", folder / "loan_labels.parquet"
