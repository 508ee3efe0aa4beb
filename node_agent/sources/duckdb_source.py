"""CSV and Parquet datasets through DuckDB: a typed view over the file, and a keyed extract.

A dataset declared with `csv = "file.csv"` or `parquet = "file.parquet"` becomes a view
(a temporary one on each pooled connection of a DuckDB database private to the dataset):

    CREATE VIEW "cohort" AS SELECT <each declared column, cast to its declared type>
    FROM read_csv('file.csv', header = true, all_varchar = true, nullstr = [...])

so every aggregate an analysis builds runs inside DuckDB, streaming the file, and only
its result reaches Python. Only the declared columns are in the view. Values are typed
from the declaration exactly as the former CSV loader did: integers are whole numbers
("32" or "32.0"), booleans true/false, t/f, yes/no, y/n or 1/0 in any case, dates ISO
8601 (a time of day is dropped); empty fields and pandas' usual missing markers ("NA",
"NaN", "null", ...) are NULL. At start-up one pass over the file checks that every
declared column is in it and every value fits its type; an error names the column, the
type and the first data row, never the value.

The agent (keyed_extract) then copies the view once into a table of the database, kept in
its private dataset folder, with each record's cell key and differencing id computed as
they are computed everywhere else (fedtre.disclosure.cellkey: a keyed MD5 of the record):
hashing every record was most of each task's work (bench/README.md), and now happens once
per version of the file. Before each task the file's size, modification time and inode
are compared with the extract's; a changed file is checked and extracted again, so a
replaced file is seen without a restart. The extract holds the declared columns only and
never leaves the agent's folder (0700; the database file 0600).

DuckDB runs inside the agent's process, so its buffers count in the agent's memory: the
database is held to MEMORY_LIMIT (a CSV scan's readers otherwise took some 180 MB at ten
million rows, and the extract's cached blocks fill whatever limit is set: the agent's
peak at ten million rows was 247 MB at 128 MB, 229 MB at 64 MB; bench/README.md), and a
sort or hash table larger than that spills to files in the agent's private dataset
folder, when one is given. Each connection also
runs its queries on THREADS threads, not one per core: every DuckDB worker thread holds
its own scan buffers and partial aggregates (~15 MB more at the agent's peak per thread
at a million rows, bench/README.md), so the agent's memory would otherwise grow with the
host's cores; the agents of a network already run their tasks side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.errors import InvalidRequest, NotFound
from fedtre.files import FILE_MODE, private_dir
from node_agent.config import DatasetConfig
from node_agent.sources.sql import SQL_TYPES

logger = logging.getLogger(__name__)

# DuckDB's buffer memory (SET memory_limit): what keeps a 10 M-row agent under 200 MB.
MEMORY_LIMIT = "24MB"
# The extract's columns beyond the declared ones: never in DataSource.table.c, so never
# named by a researcher's parameters.
KEY_COLUMN = "fedtre_record_key"
ID_COLUMN = "fedtre_record_id"
# Changes whenever what the extract holds changes: an older extract is rebuilt.
EXTRACT_VERSION = "extract1"
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
        return boolean_from_text(value)
    if declared == "date":
        return f"CAST(TRY_CAST({value} AS TIMESTAMP) AS DATE)"
    raise InvalidRequest(f"column {column!r}: unknown declared type {declared!r}")


def boolean_from_text(value: str) -> str:
    """The SQL reading a text as a boolean (true/false, t/f, yes/no, y/n, 1/0, any case;
    anything else NULL), in DuckDB's and Spark's SQL alike."""
    true = ", ".join(_literal(v) for v in _TRUE)
    false = ", ".join(_literal(v) for v in _FALSE)
    return f"CASE WHEN lower({value}) IN ({true}) THEN true WHEN lower({value}) IN ({false}) THEN false END"


def open_file_source(dataset: DatasetConfig, spill_dir: Path | None = None) -> DataSource:
    """Return a DataSource over a CSV or Parquet file, checked against its declared columns.

    spill_dir: the agent's private dataset folder, holding the dataset's DuckDB database
    (for keyed_extract) and the files DuckDB writes when a query outgrows MEMORY_LIMIT
    (created only then); without one, each pooled connection is an in-memory database
    holding only the view. Raises NotFound when a declared column is not in the file, and
    InvalidRequest when the file cannot be read or a value does not fit its declared type
    (the message names the column and data row, never the value).
    """
    reader, kind, path = _reader(dataset)
    database = ":memory:"
    settings = [f"SET memory_limit = {_literal(MEMORY_LIMIT)}", f"SET threads = {THREADS}"]
    if spill_dir is not None:
        private_dir(spill_dir)
        database = str(spill_dir / f"{dataset.name}.duckdb")
        settings.append(f"SET temp_directory = {_literal(str(spill_dir / 'duckdb-spill'))}")
    created = database != ":memory:" and not os.path.exists(database)
    engine = sa.create_engine(f"duckdb:///{database}", poolclass=QueuePool)

    @sa.event.listens_for(engine, "connect")
    def _limit(dbapi_connection: Any, _record: Any) -> None:
        for setting in settings:
            dbapi_connection.execute(setting)

    try:
        with engine.connect() as conn:
            typed = _inspect(conn, reader, dataset, kind, path)
    except BaseException:
        engine.dispose()
        if created:  # leave nothing behind for a file that does not fit
            for name in (database, database + ".wal"):
                Path(name).unlink(missing_ok=True)
        raise
    # A temporary view, one per connection: connections to one database never race to
    # define it, and nothing of it is stored.
    view = _view_sql(dataset.name, typed, reader)

    @sa.event.listens_for(engine, "connect")
    def _create_view(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(view)

    engine.dispose()  # the checking connection had no view; new ones get it on connect
    _make_private(database)
    return DataSource(
        engine=engine,
        table=_declared_table(dataset.name, dataset),
        schema=DatasetSchema(dataset.name, dict(dataset.columns)),
    )


def _view_sql(name: str, typed: dict[str, str], reader: str) -> str:
    return (
        f"CREATE OR REPLACE TEMP VIEW {_ident(name)} AS SELECT "
        + ", ".join(f"{expr} AS {_ident(c)}" for c, expr in typed.items())
        + f" FROM {reader}"
    )


def _declared_table(name: str, dataset: DatasetConfig, *extra: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(column, SQL_TYPES[typ]()) for column, typ in dataset.columns.items()),
        *extra,
    )


def _inspect(
    conn: sa.Connection, reader: str, dataset: DatasetConfig, kind: str, path: Path
) -> dict[str, str]:
    """Check the file holds every declared column and fits their types; return each
    column's typed SQL expression."""
    header = _header(conn, reader, dataset, kind, path)
    text = kind == "CSV"
    missing = [c for c in dataset.columns if c not in header]
    if missing:
        where = "in its header" if text else "among its columns"
        raise NotFound(
            f"dataset {dataset.name!r}: {kind} {path} has no column(s) {missing} "
            f"{where}; remove them from [datasets.{dataset.name}.columns] or fix the file"
        )
    typed = {c: _typed(c, t, text=text, stored=header[c]) for c, t in dataset.columns.items()}
    _check_values(conn, reader, dataset, typed, kind, path)
    return typed


def _make_private(database: str) -> None:
    """DuckDB creates its files with the process's umask: make them 0600 (the folder is 0700)."""
    if database == ":memory:":
        return
    for name in (database, database + ".wal"):
        if os.path.exists(name):
            os.chmod(name, FILE_MODE)


# -- the keyed extract ----------------------------------------------------------------------


def keyed_extract(keyed: DataSource, dataset: DatasetConfig) -> DataSource:
    """Return `keyed` (a file source with its record key and id, cellkey.keyed_source)
    reading its extract: a table of the declared columns with each record's key and id
    computed once, rebuilt whenever the file changes (DataSource.refresh, called before
    each task). The source must have been opened with a private folder."""
    reserved = sorted({KEY_COLUMN, ID_COLUMN} & set(dataset.columns))
    if reserved:
        raise InvalidRequest(
            f"dataset {dataset.name!r}: the column name(s) {reserved} are reserved for the "
            "agent's record keys; rename the column in the file and in "
            f"[datasets.{dataset.name}.columns]"
        )
    database = keyed.engine.url.database
    if not database or database == ":memory:":
        raise ValueError("a keyed extract needs the dataset's private folder (open_file_source)")
    extract = _Extract(keyed, dataset, Path(database))
    extract.refresh()
    table = _declared_table(extract.name, dataset)
    return replace(
        keyed,
        table=table,
        record_key=sa.column(KEY_COLUMN, sa.Integer(), _selectable=table),
        record_id=sa.column(ID_COLUMN, sa.BigInteger(), _selectable=table),
        refresh=extract.refresh,
    )


class _Extract:
    """Builds a file dataset's extract, and again when the file has changed."""

    def __init__(self, keyed: DataSource, dataset: DatasetConfig, database: Path) -> None:
        assert keyed.record_key is not None and keyed.record_id is not None
        self._source = keyed
        self._dataset = dataset
        self._database = database
        self._reader, self._kind, self._path = _reader(dataset)
        self.name = f"{dataset.name}__extract"
        self._lock = threading.Lock()
        self._built: tuple[int, ...] | None = None
        self._table = _declared_table(
            self.name,
            dataset,
            sa.Column(KEY_COLUMN, sa.Integer()),
            sa.Column(ID_COLUMN, sa.BigInteger()),
        )
        self._select = sa.select(
            *keyed.table.c,
            keyed.record_key.label(KEY_COLUMN),
            keyed.record_id.label(ID_COLUMN),
        )
        compiled = self._select.compile(keyed.engine)
        # What the extract is a function of, besides the file: the columns and the keying
        # (its SQL carries seeds derived from the TRE's secret; only their digest is kept).
        self._recipe = hashlib.sha256(
            json.dumps(
                [EXTRACT_VERSION, str(compiled), sorted(compiled.params.items())], default=str
            ).encode()
        ).hexdigest()

    def refresh(self) -> None:
        """Rebuild the extract when the file changed since it was built (or never was)."""
        stamp = _stamp(self._path)
        if stamp == self._built:
            return
        with self._lock:
            stamp = _stamp(self._path)
            if stamp == self._built:
                return
            fingerprint = json.dumps([self._recipe, list(stamp)])
            engine = self._source.engine
            with engine.begin() as conn:
                if self._stored_fingerprint(conn) != fingerprint:
                    self._rebuild(conn, fingerprint)
            _make_private(str(self._database))
            self._built = stamp

    def _stored_fingerprint(self, conn: sa.Connection) -> str | None:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS fedtre_extracts (name VARCHAR PRIMARY KEY, fingerprint VARCHAR)"
        )
        row = conn.exec_driver_sql(
            "SELECT fingerprint FROM fedtre_extracts WHERE name = ?", (self.name,)
        ).first()
        return None if row is None else str(row[0])

    def _rebuild(self, conn: sa.Connection, fingerprint: str) -> None:
        started = time.perf_counter()
        # The file may have changed since start-up: it must still fit its declaration, and
        # is read through a view typed for it as it is now (a column's stored type may differ).
        typed = _inspect(conn, self._reader, self._dataset, self._kind, self._path)
        conn.exec_driver_sql(_view_sql(self._dataset.name, typed, self._reader))
        # One transaction: tasks running meanwhile read the previous extract until it commits.
        self._table.drop(conn, checkfirst=True)
        self._table.create(conn)
        conn.execute(
            sa.insert(self._table).from_select([c.name for c in self._table.c], self._select)
        )
        conn.exec_driver_sql(
            "INSERT OR REPLACE INTO fedtre_extracts VALUES (?, ?)", (self.name, fingerprint)
        )
        records = conn.execute(sa.select(sa.func.count()).select_from(self._table)).scalar_one()
        logger.info(
            "dataset %r: keyed extract of %s built (%d records, %.1f s)",
            self._dataset.name,
            self._kind,
            records,
            time.perf_counter() - started,
        )


def _stamp(path: Path) -> tuple[int, ...]:
    """The file's size, modification time (ns) and inode: a rewrite or a replacement changes one."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise NotFound(f"cannot read the dataset file {path}: {exc.strerror}") from exc
    return (info.st_size, info.st_mtime_ns, info.st_ino)


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
