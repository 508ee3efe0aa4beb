"""CSV and Parquet datasets through DuckDB: a typed view over the file, read in place.

A dataset declared with `csv = "file.csv"` or `parquet = "file.parquet"` becomes a view
in a private in-memory DuckDB database (one per pooled connection, each holding only the
view's definition, never a copy of the data):

    CREATE VIEW "cohort" AS SELECT <each declared column, cast to its declared type>
    FROM read_csv('file.csv', header = true, all_varchar = true, nullstr = [...])

so every aggregate an analysis builds runs inside DuckDB, streaming the file, and only
its result reaches Python. Only the declared columns are in the view. Values are typed
from the declaration exactly as the former CSV loader did: integers are whole numbers
("32" or "32.0"), booleans true/false, t/f, yes/no, y/n or 1/0 in any case, dates ISO
8601 (a time of day is dropped); empty fields and pandas' usual missing markers ("NA",
"NaN", "null", ...) are NULL. At start-up one pass over the file checks that every
declared column is in it and every value fits its type; an error names the column, the
type and the first data row, never the value. The file is read afresh by every query, so
a replaced file is seen without a restart.

DuckDB runs inside the agent's process, so its buffers count in the agent's memory: each
connection is held to MEMORY_LIMIT (a CSV scan's readers otherwise took some 180 MB at
ten million rows; bench/README.md), and a sort or hash table larger than that spills to
files in the agent's private dataset folder, when one is given. Each connection also
runs its queries on THREADS threads, not one per core: every DuckDB worker thread holds
its own scan buffers and partial aggregates (~15 MB more at the agent's peak per thread
at a million rows, bench/README.md), so the agent's memory would otherwise grow with the
host's cores; the agents of a network already run their tasks side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import DatasetConfig
from node_agent.sources.sql import SQL_TYPES

# DuckDB's buffer memory per connection (SET memory_limit).
MEMORY_LIMIT = "128MB"
# DuckDB's worker threads per connection (SET threads): bounds the agent's memory on a
# many-core host; 1 keeps a 10-million-row agent under 200 MB (bench/README.md).
THREADS = 1
# The CSV reader's buffer (read_csv's buffer_size; DuckDB's default is 32 MB): 2 MB lowered
# the peak of a one-thread scan by ~10 MB at no measured cost in time (bench/README.md).
# It may not be smaller than the longest line allowed (DuckDB's max_line_size, 2 MB).
CSV_BUFFER_BYTES = 2 << 20
# Read as missing, as pandas' read_csv did by default (the common ones).
NULL_STRINGS = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "<NA>", "#N/A")
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
# DuckDB's integer types: a Parquet column of one holds whole numbers only.
_INTEGER_TYPES = frozenset(
    ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
    + ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
)
_EXPECTED = {
    "integer": "whole numbers",
    "float": "numbers",
    "boolean": "booleans (true/false, yes/no or 1/0)",
    "date": "ISO 8601 dates (YYYY-MM-DD)",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _reader(dataset: DatasetConfig) -> tuple[str, str, Path]:
    """Return (SQL table function reading the file, what the file is, its path)."""
    if dataset.csv is not None:
        nulls = ", ".join(_literal(s) for s in NULL_STRINGS)
        return (
            f"read_csv({_literal(str(dataset.csv))}, header = true, all_varchar = true, "
            f"nullstr = [{nulls}], buffer_size = {CSV_BUFFER_BYTES})",
            "CSV",
            dataset.csv,
        )
    parquet = getattr(dataset, "parquet", None)
    if parquet is None:
        raise InvalidRequest(f"dataset {dataset.name!r} is neither a CSV nor a Parquet file")
    return f"read_parquet({_literal(str(parquet))})", "Parquet", parquet


def _typed(column: str, declared: str, *, text: bool, stored: str = "VARCHAR") -> str:
    """The SQL expression giving `column` its declared type (from text, or a Parquet type).

    stored: the file's own type for the column (DESCRIBE; VARCHAR for a CSV read as text).
    """
    raw = _ident(column)
    if declared == "float":
        return f"TRY_CAST({raw} AS DOUBLE)"
    if declared == "string":
        return raw if text else f"CAST({raw} AS VARCHAR)"
    # A Parquet column already of the declared kind is taken as it is: the same values as
    # through its text form below, without a cast to text and a regex per value (which
    # cost ~0.3 s per million values and integer column, in every query).
    if not text and declared == "integer" and stored in _INTEGER_TYPES:
        return f"TRY_CAST({raw} AS BIGINT)"
    if not text and (declared, stored) in (("boolean", "BOOLEAN"), ("date", "DATE")):
        return raw
    # Integers, booleans and dates go through their text form, exact for these types.
    value = f"trim(CAST({raw} AS VARCHAR))"
    if declared == "integer":
        number = f"TRY_CAST({value} AS DOUBLE)"
        return (
            f"CASE WHEN regexp_full_match({value}, '[+-]?[0-9]+') THEN TRY_CAST({value} AS BIGINT) "
            f"WHEN isfinite({number}) AND {number} = floor({number}) "
            f"THEN CAST({number} AS BIGINT) END"
        )
    if declared == "boolean":
        true = ", ".join(_literal(v) for v in _TRUE)
        false = ", ".join(_literal(v) for v in _FALSE)
        return (
            f"CASE WHEN lower({value}) IN ({true}) THEN true "
            f"WHEN lower({value}) IN ({false}) THEN false END"
        )
    if declared == "date":
        return f"CAST(TRY_CAST({value} AS TIMESTAMP) AS DATE)"
    raise InvalidRequest(f"column {column!r}: unknown declared type {declared!r}")


def open_file_source(dataset: DatasetConfig, spill_dir: Path | None = None) -> DataSource:
    """Return a DataSource over a CSV or Parquet file, checked against its declared columns.

    spill_dir: where DuckDB may write temporary files when a query outgrows MEMORY_LIMIT
    (created by DuckDB only then). Raises NotFound when a declared column is not in the
    file, and InvalidRequest when the file cannot be read or a value does not fit its
    declared type (the message names the column and data row, never the value).
    """
    reader, kind, path = _reader(dataset)
    engine = sa.create_engine("duckdb:///:memory:", poolclass=QueuePool)
    settings = [f"SET memory_limit = {_literal(MEMORY_LIMIT)}", f"SET threads = {THREADS}"]
    if spill_dir is not None:
        settings.append(f"SET temp_directory = {_literal(str(spill_dir / 'duckdb-spill'))}")

    @sa.event.listens_for(engine, "connect")
    def _limit(dbapi_connection: Any, _record: Any) -> None:
        for setting in settings:
            dbapi_connection.execute(setting)

    try:
        with engine.connect() as conn:
            header = _header(conn, reader, dataset, kind, path)
            text = kind == "CSV"
            missing = [c for c in dataset.columns if c not in header]
            if missing:
                where = "in its header" if text else "among its columns"
                raise NotFound(
                    f"dataset {dataset.name!r}: {kind} {path} has no column(s) {missing} "
                    f"{where}; remove them from [datasets.{dataset.name}.columns] or fix the file"
                )
            typed = {
                c: _typed(c, t, text=text, stored=header[c]) for c, t in dataset.columns.items()
            }
            _check_values(conn, reader, dataset, typed, kind, path)
    except BaseException:
        engine.dispose()
        raise
    view = (
        f"CREATE OR REPLACE VIEW {_ident(dataset.name)} AS SELECT "
        + ", ".join(f"{expr} AS {_ident(c)}" for c, expr in typed.items())
        + f" FROM {reader}"
    )

    @sa.event.listens_for(engine, "connect")
    def _create_view(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(view)

    engine.dispose()  # the checking connection had no view; new ones get it on connect
    table = sa.Table(
        dataset.name,
        sa.MetaData(),
        *(sa.Column(column, SQL_TYPES[typ]()) for column, typ in dataset.columns.items()),
    )
    return DataSource(
        engine=engine, table=table, schema=DatasetSchema(dataset.name, dict(dataset.columns))
    )


def _header(
    conn: sa.Connection, reader: str, dataset: DatasetConfig, kind: str, path: Path
) -> dict[str, str]:
    """Return the file's columns and their DuckDB types."""
    try:
        rows = conn.exec_driver_sql(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except sa.exc.DBAPIError as exc:
        raise InvalidRequest(
            f"dataset {dataset.name!r}: cannot read {kind} {path} ({type(exc.orig).__name__}); "
            f"check that it exists and is a well-formed {kind} file"
        ) from exc
    return {str(row[0]): str(row[1]).upper() for row in rows}


def _check_values(
    conn: sa.Connection,
    reader: str,
    dataset: DatasetConfig,
    typed: dict[str, str],
    kind: str,
    path: Path,
) -> None:
    """One pass over the file: count values that do not fit their declared type, per column."""
    checked = [c for c, t in dataset.columns.items() if t != "string"]
    if not checked:
        return
    parts = []
    for column in checked:
        bad = f"({_ident(column)} IS NOT NULL AND {typed[column]} IS NULL)"
        parts += [f"count(*) FILTER (WHERE {bad})", f"min(rn) FILTER (WHERE {bad})"]
    columns = ", ".join(_ident(c) for c in checked)
    query = (
        f"SELECT {', '.join(parts)} FROM "
        f"(SELECT row_number() OVER () AS rn, {columns} FROM {reader})"
    )
    try:
        found = conn.exec_driver_sql(query).one()
    except sa.exc.DBAPIError as exc:
        raise InvalidRequest(
            f"dataset {dataset.name!r}: cannot read {kind} {path} ({type(exc.orig).__name__}); "
            f"check that it is a well-formed {kind} file"
        ) from exc
    for i, column in enumerate(checked):
        count, first = found[2 * i], found[2 * i + 1]
        if count:
            typ = dataset.columns[column]
            raise InvalidRequest(
                f"dataset {dataset.name!r}: column {column!r} of {path} has {int(count)} "
                f"value(s) that are not {_EXPECTED[typ]}, first on data row {int(first)}; fix "
                "the file or declare the column's type correctly"
            )
