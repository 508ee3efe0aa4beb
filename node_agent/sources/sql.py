"""A DataSource over any SQLAlchemy database: an engine and a Core table of the declared columns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.errors import InvalidRequest, NotFound

# How a declared column type reads through SQLAlchemy (SQLite stores booleans as 0/1 and
# dates as ISO text, which these types read back as bool and datetime.date).
SQL_TYPES: Mapping[str, type[TypeEngine[Any]]] = {
    "integer": sa.Integer,
    "float": sa.Double,
    "string": sa.String,
    "boolean": sa.Boolean,
    "date": sa.Date,
}

# pysqlite is the only SQLite driver whose URI form (and so mode=ro) we rely on.
_PYSQLITE = ("sqlite", "sqlite+pysqlite")


def open_sql_source(
    name: str, url: str | sa.URL, table: str, columns: Mapping[str, str]
) -> DataSource:
    """Connect to url and return a DataSource exposing only the declared columns of table.

    table may be schema-qualified ("research.cohort") and may be a view. A SQLite file is
    opened read-only. Raises NotFound when the database file, table/view or any declared
    column is missing, and InvalidRequest when the database cannot be opened.
    """
    engine = _create_engine(name, sa.make_url(url))
    try:
        schema_name, _, table_name = table.rpartition(".")
        _check_columns(name, engine, schema_name or None, table_name, columns)
    except BaseException:
        engine.dispose()
        raise
    core = sa.Table(
        table_name,
        sa.MetaData(),
        *(sa.Column(column, SQL_TYPES[typ]()) for column, typ in columns.items()),
        schema=schema_name or None,
    )
    return DataSource(engine=engine, table=core, schema=DatasetSchema(name, dict(columns)))


def readonly_sqlite_url(url: sa.URL) -> sa.URL:
    """Return url rewritten to open its SQLite file read-only; other URLs are returned as is.

    Raises NotFound when the SQLite file does not exist (SQLite would otherwise create it).
    """
    database = url.database
    if url.drivername not in _PYSQLITE or not database or database == ":memory:":
        return url
    if database.startswith("file:"):
        return url  # already a SQLite URI: the operator chose its mode
    path = Path(database).resolve()
    if not path.is_file():
        raise NotFound(f"SQLite database file {path} does not exist; correct the dataset's url")
    query = {**url.query, "mode": "ro", "uri": "true"}
    return url.set(database=f"file:{quote(str(path))}", query=query)


def _create_engine(name: str, url: sa.URL) -> sa.Engine:
    try:
        url = readonly_sqlite_url(url)
    except NotFound as exc:
        raise NotFound(f"dataset {name!r}: {exc}") from exc
    backend = url.get_backend_name()
    options: dict[str, Any] = {}
    if backend == "duckdb" and url.database not in (None, "", ":memory:"):
        options["connect_args"] = {"read_only": True}  # like SQLite files: never written
    try:
        return sa.create_engine(url, pool_pre_ping=backend not in ("sqlite", "duckdb"), **options)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise InvalidRequest(
            f"dataset {name!r}: cannot use url {url.render_as_string(hide_password=True)} "
            f"({exc}); check the URL and that its database driver is installed"
        ) from exc


def _check_columns(
    name: str, engine: sa.Engine, schema: str | None, table: str, columns: Mapping[str, str]
) -> None:
    shown = f"{schema}.{table}" if schema else table
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(table, schema=schema):
                raise NotFound(
                    f"dataset {name!r}: table or view {shown!r} does not exist in {where}; "
                    "correct the dataset's table or create it"
                )
            if engine.dialect.name == "duckdb":
                # duckdb-engine's column reflection queries catalogs DuckDB lacks: ask the table
                named = sa.table(table, schema=schema)
                keys = conn.execute(sa.select(sa.text("*")).select_from(named).limit(0)).keys()
                present = set(keys)
            else:
                present = {c["name"] for c in inspector.get_columns(table, schema=schema)}
    except sa.exc.SQLAlchemyError as exc:
        raise InvalidRequest(
            f"dataset {name!r}: cannot read {where} ({type(exc).__name__}: "
            f"{getattr(exc, 'orig', None) or exc}); check the url and the agent's database access"
        ) from exc
    missing = [column for column in columns if column not in present]
    if missing:
        raise NotFound(
            f"dataset {name!r}: {shown!r} has no column(s) {missing} declared in "
            f"[datasets.{name}.columns]; remove them from the config or add them to the table"
        )
