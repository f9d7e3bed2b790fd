"""A generated campaign of hostile tables for the batch route: extreme floats in a CSV, every
Arrow type in every column of a Parquet file, unicode, empty tables and duplicated columns.
Each case is (name, body, media type)."""

from __future__ import annotations

import datetime as dt
import decimal
import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_assets.config import DatasetContract

CSV, PARQUET = "text/csv", "application/vnd.apache.parquet"
EXTREME_TEXT = ["inf", "-inf", "Infinity", "1e999", "-1e999", "nan", "NaN", "1e308", "-0",
                "0x10", "1_000", "١٢", "½", "9" * 400, "\u202e42", "😀", "'; DROP TABLE x; --",
                "1e-400", "+", "--5", " 7 "]


def _rows(contract: DatasetContract, record: dict, n: int = 4) -> dict[str, list]:
    return {name: [record[name]] * n for name in contract.features}


def _csv(columns: dict[str, list]) -> bytes:
    lines = [",".join(f'"{n}"' for n in columns)]
    for i in range(len(next(iter(columns.values()), []))):
        lines.append(",".join(f'"{columns[n][i]}"' for n in columns))
    return ("\n".join(lines) + "\n").encode()


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _arrays(n: int) -> dict[str, pa.Array]:
    """One column of every Arrow type Parquet can carry."""
    now = dt.datetime(2024, 5, 1, 12, 30)
    return {
        "timestamp": pa.array([now] * n, pa.timestamp("us")),
        "timestamp_tz": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
        "date32": pa.array([now.date()] * n, pa.date32()),
        "time64": pa.array([now.time()] * n, pa.time64("us")),
        "duration": pa.array([dt.timedelta(seconds=5)] * n, pa.duration("s")),
        "list": pa.array([[1, 2]] * n, pa.list_(pa.int64())),
        "struct": pa.array([{"a": 1}] * n, pa.struct([("a", pa.int64())])),
        "map": pa.array([[("k", 1)]] * n, pa.map_(pa.string(), pa.int64())),
        "binary": pa.array([b"\x00\xff"] * n, pa.binary()),
        "fixed_binary": pa.array([b"ab"] * n, pa.binary(2)),
        "float32_nan": pa.array([np.nan, 1.5] * (n // 2), pa.float32()),
        "float64_inf": pa.array([np.inf, -np.inf] * (n // 2), pa.float64()),
        "float16": pa.array(np.array([1.0] * n, dtype=np.float16), pa.float16()),
        "int8": pa.array([-128] * n, pa.int8()),
        "uint64_max": pa.array([2**64 - 1] * n, pa.uint64()),
        "int64_min": pa.array([-(2**63)] * n, pa.int64()),
        "decimal": pa.array([decimal.Decimal("12.345")] * n, pa.decimal128(10, 3)),
        "bool": pa.array([True, False] * (n // 2), pa.bool_()),
        "null": pa.nulls(n),
        "large_string": pa.array(["x" * 10] * n, pa.large_string()),
        "dictionary": pa.array(["married"] * n).dictionary_encode(),
        "unicode": pa.array(["𝔞𝔤𝔢", "\x00", "é", "\u202e"] * (n // 4), pa.string()),
    }


def campaign(contract: DatasetContract, record: dict) -> Iterator[tuple[str, bytes, str]]:
    base = _rows(contract, record)
    n = len(next(iter(base.values())))
    numeric, categorical = list(contract.numeric), list(contract.categorical)
    # CSV: extreme and odd text in each numeric column, and in a categorical one.
    for name in [*numeric, categorical[0]]:
        for text in EXTREME_TEXT:
            columns = {k: list(v) for k, v in base.items()}
            columns[name][1] = text
            yield f"csv {name}={text[:12]!r}", _csv(columns), CSV
    # Parquet: every Arrow type in every column.
    for name in contract.features:
        for kind, array in _arrays(n).items():
            columns = {k: pa.array(v) for k, v in base.items()}
            columns[name] = array
            yield f"parquet {name}:{kind}", _parquet(pa.table(columns)), PARQUET
    # Shapes: empty, header only, duplicated and unicode column names, one column, no columns.
    yield "csv empty body", b"", CSV
    yield "csv header only", _csv({k: [] for k in base}), CSV
    text = _csv(base).decode().splitlines()
    text = [f'{line},"{numeric[0]}"' if i == 0 else f'{line},"1"' for i, line in enumerate(text)]
    yield "csv duplicated column", ("\n".join(text) + "\n").encode(), CSV
    dup = pa.Table.from_arrays([pa.array(v) for v in base.values()] + [pa.array(base[numeric[0]])],
                               names=[*base, numeric[0]])
    yield "parquet duplicated column", _parquet(dup), PARQUET
    yield "parquet unicode column", _parquet(pa.table({**{k: pa.array(v) for k, v in base.items()},
                                                        "âge😀": pa.array([1] * n)})), PARQUET
    yield "parquet no rows", _parquet(pa.table({k: pa.array(v[:0]) for k, v in base.items()})), \
        PARQUET
    yield "parquet no columns", _parquet(pa.table({})), PARQUET
    yield "parquet garbage", b"PAR1" + bytes(range(256)) + b"PAR1", PARQUET
    yield "csv latin-1", _csv(base).replace(b'"married"', b'"mari\xe9"'), CSV
    yield "csv NUL bytes", _csv(base).replace(b'"married"', b'"mar\x00ried"'), CSV
