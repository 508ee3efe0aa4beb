"""Load a declared CSV file into a private SQLite file, so CSV datasets share the SQL path.

The CSV is read once at start-up, in chunks, typed from the declared columns (booleans
stored as 0/1, dates as ISO text), and written to `<cache_dir>/<dataset>.sqlite`, readable
only by the agent's user; analyses then run on it read-only like any SQL dataset. Only the
declared columns are copied. A later issue replaces the copy with DuckDB reading the CSV
in place (pushdown, no private copy).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fedtre.analyses.base import DataSource
from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import DatasetConfig
from node_agent.sources.sql import open_sql_source

CHUNK_ROWS = 100_000

# How each declared type is stored in the private SQLite file.
_STORAGE_TYPES = {
    "integer": sa.Integer,
    "float": sa.Float,
    "string": sa.Text,
    "boolean": sa.Integer,
    "date": sa.Text,
}
_BOOLEANS = {
    **dict.fromkeys(("true", "t", "yes", "y", "1"), 1),
    **dict.fromkeys(("false", "f", "no", "n", "0"), 0),
}
_EXPECTED = {
    "integer": "whole numbers",
    "float": "numbers",
    "boolean": "booleans (true/false, yes/no or 1/0)",
    "date": "ISO 8601 dates (YYYY-MM-DD)",
}


def load_csv(dataset: DatasetConfig, cache_dir: Path) -> DataSource:
    """Copy dataset's declared CSV columns into cache_dir and return a DataSource over them.

    Raises NotFound when a declared column is not in the CSV header, and InvalidRequest
    when the file cannot be read or a value does not fit its declared type (the message
    names the column and row, never the value).
    """
    assert dataset.csv is not None
    path = dataset.csv
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidRequest(f"dataset {dataset.name!r}: cannot read CSV {path} ({exc})") from exc
    missing = [column for column in dataset.columns if column not in header]
    if missing:
        raise NotFound(
            f"dataset {dataset.name!r}: CSV {path} has no column(s) {missing} in its header; "
            f"remove them from [datasets.{dataset.name}.columns] or fix the file"
        )
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = cache_dir / f"{dataset.name}.sqlite"
    partial = cache_dir / f"{dataset.name}.sqlite.partial"
    partial.unlink(missing_ok=True)
    try:
        _copy(dataset, partial)
    except BaseException:
        partial.unlink(missing_ok=True)  # it holds row-level data
        raise
    os.replace(partial, target)  # a crash mid-load never leaves a half-loaded dataset in place
    url = sa.URL.create("sqlite", database=str(target))
    return open_sql_source(dataset.name, url, dataset.name, dataset.columns)


def _copy(dataset: DatasetConfig, dest: Path) -> None:
    assert dataset.csv is not None
    metadata = sa.MetaData()
    table = sa.Table(
        dataset.name,
        metadata,
        *(sa.Column(column, _STORAGE_TYPES[typ]()) for column, typ in dataset.columns.items()),
    )
    dest.touch(mode=0o600)
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(dest)))
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            rows_done = 0
            chunks = pd.read_csv(
                dataset.csv, usecols=list(dataset.columns), dtype=str, chunksize=CHUNK_ROWS
            )
            for chunk in chunks:
                values = {
                    column: _typed(dataset, column, typ, chunk[column], rows_done)
                    for column, typ in dataset.columns.items()
                }
                records = [
                    dict(zip(values, row, strict=True))
                    for row in zip(*values.values(), strict=True)
                ]
                if records:
                    conn.execute(table.insert(), records)
                rows_done += len(chunk)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidRequest(
            f"dataset {dataset.name!r}: cannot read CSV {dataset.csv} ({type(exc).__name__}); "
            "check that it is a well-formed CSV file"
        ) from exc
    finally:
        engine.dispose()


def _typed(
    dataset: DatasetConfig, column: str, typ: str, raw: pd.Series, rows_before: int
) -> list[Any]:
    """Return raw's values as Python values of the declared type, None for missing ones."""
    present = raw.notna()
    if typ == "string":
        return [value if ok else None for value, ok in zip(raw, present, strict=True)]
    if typ in ("integer", "float"):
        converted = pd.to_numeric(raw, errors="coerce")
        bad = present & converted.isna()
        if typ == "integer":
            bad |= converted.notna() & (converted % 1 != 0)
    elif typ == "boolean":
        converted = raw.str.strip().str.lower().map(_BOOLEANS)
        bad = present & converted.isna()
    else:
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601")
        converted = parsed.dt.strftime("%Y-%m-%d")
        bad = present & parsed.isna()
    if bad.any():
        first = rows_before + int(bad.to_numpy().argmax()) + 1
        raise InvalidRequest(
            f"dataset {dataset.name!r}: column {column!r} of {dataset.csv} has "
            f"{int(bad.sum())} value(s) in this chunk that are not {_EXPECTED[typ]}, "
            f"first on data row {first}; fix the file or declare the column's type correctly"
        )
    cast = {"float": float, "integer": int, "boolean": int}.get(typ, str)
    return [cast(v) if ok else None for v, ok in zip(converted, converted.notna(), strict=True)]
