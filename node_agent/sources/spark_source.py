"""Parquet and CSV datasets in Spark SQL: a typed temporary view, the work done by Spark.

A dataset declared with `engine = "spark"` and `parquet = ...` (a file, or a directory of
Parquet files as Spark writes them) or `csv = ...` becomes a temporary view in a Spark
session of its own:

    CREATE TEMPORARY VIEW `cohort` AS SELECT <each declared column, typed> FROM <the file>

so every aggregate an analysis builds runs in Spark (local threads, or the TRE's cluster
given by `spark_master`), and only its result reaches the agent. Values are typed from the
declaration as the DuckDB reader types them (node_agent.sources.duckdb_source): integers
are whole numbers, booleans true/false, t/f, yes/no, y/n or 1/0, dates ISO 8601; empty
fields and pandas' usual missing markers are NULL. At start-up one pass over the data
checks that every value fits its type; an error names the column and how many values do
not fit, never a value.

One SparkContext serves the agent's process (Spark allows one), so every Spark dataset of
an agent names the same master; each dataset has its own session (its own views).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import DatasetConfig
from node_agent.sources.duckdb_source import _EXPECTED, NULL_STRINGS, boolean_from_text
from node_agent.sources.spark_dialect import create_spark_engine
from node_agent.sources.sql import SQL_TYPES

DEFAULT_MASTER = "local[2]"
# What a session the agent starts sets (an operator's spark-defaults.conf adds to it).
SESSION_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
}

_lock = threading.Lock()


def spark_session(master: str) -> Any:
    """Return the process's SparkSession on master, starting it if none runs yet.

    Raises InvalidRequest when pyspark is not installed, or when a session already runs
    on another master (one SparkContext per process).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise InvalidRequest(
            "engine 'spark' needs pyspark and a Java runtime: pip install 'fedtre[spark]'"
        ) from exc
    from pyspark import SparkContext

    with _lock:
        if SparkContext._active_spark_context is not None:
            # The session already running (its master and settings stay as they are).
            active = SparkSession.builder.getOrCreate()
        else:
            builder = SparkSession.builder.master(master).appName("fedtre-agent")
            for key, value in SESSION_CONF.items():
                builder = builder.config(key, value)
            active = builder.getOrCreate()
        running = active.sparkContext.master
    if running != master:
        raise InvalidRequest(
            f"Spark already runs on master {running!r} in this agent, not {master!r}; "
            "give every Spark dataset the same spark_master"
        )
    return active


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _typed(raw: str, declared: str) -> str:
    """The Spark SQL expression giving raw (text, or a Parquet type) its declared type."""
    if declared == "float":
        return f"try_cast({raw} AS DOUBLE)"
    if declared == "string":
        return f"CAST({raw} AS STRING)"
    value = f"trim(CAST({raw} AS STRING))"
    if declared == "integer":
        number = f"try_cast({value} AS DOUBLE)"
        # Nested CASE: floor() of a double beyond BIGINT's range would raise (ANSI mode).
        return (
            f"CASE WHEN {value} RLIKE '^[+-]?[0-9]+$' THEN try_cast({value} AS BIGINT) "
            f"WHEN abs({number}) < 9.0e18 THEN "
            f"CASE WHEN {number} = floor({number}) THEN CAST({number} AS BIGINT) END END"
        )
    if declared == "boolean":
        return boolean_from_text(value)
    if declared == "date":
        return f"CAST(try_cast({value} AS TIMESTAMP) AS DATE)"
    raise InvalidRequest(f"unknown declared type {declared!r}")


def open_spark_source(dataset: DatasetConfig) -> DataSource:
    """Return a DataSource over the dataset's Parquet or CSV data in Spark, checked.

    Raises NotFound when a declared column is not in the data, and InvalidRequest when
    Spark cannot read it or a value does not fit its declared type.
    """
    path, kind = (dataset.parquet, "Parquet") if dataset.parquet else (dataset.csv, "CSV")
    assert path is not None
    session = spark_session(dataset.spark_master or DEFAULT_MASTER).newSession()
    raw = _read(session, dataset, Path(path), kind)
    missing = [c for c in dataset.columns if c not in raw.columns]
    if missing:
        where = "in its header" if kind == "CSV" else "among its columns"
        raise NotFound(
            f"dataset {dataset.name!r}: {kind} {path} has no column(s) {missing} {where}; "
            f"remove them from [datasets.{dataset.name}.columns] or fix the file"
        )
    source_view = f"{dataset.name}_file"
    raw.createOrReplaceTempView(source_view)
    nulls = ", ".join(_literal(s) for s in NULL_STRINGS)
    cells = {
        # A CSV's missing markers are NULL; a Parquet file has typed NULLs of its own.
        c: f"CASE WHEN {_ident(c)} IN ({nulls}) THEN NULL ELSE {_ident(c)} END"
        if kind == "CSV"
        else _ident(c)
        for c in dataset.columns
    }
    typed = {c: _typed(cells[c], t) for c, t in dataset.columns.items()}
    _check_values(session, dataset, source_view, cells, typed, path)
    session.sql(
        f"CREATE OR REPLACE TEMPORARY VIEW {_ident(dataset.name)} AS SELECT "
        + ", ".join(f"{expr} AS {_ident(c)}" for c, expr in typed.items())
        + f" FROM {_ident(source_view)}"
    )
    table = sa.Table(
        dataset.name,
        sa.MetaData(),
        *(sa.Column(column, SQL_TYPES[typ]()) for column, typ in dataset.columns.items()),
    )
    return DataSource(
        engine=create_spark_engine(session),
        table=table,
        schema=DatasetSchema(dataset.name, dict(dataset.columns)),
    )


def _read(session: Any, dataset: DatasetConfig, path: Path, kind: str) -> Any:
    try:
        if kind == "CSV":
            return session.read.csv(str(path), header=True, inferSchema=False)
        return session.read.parquet(str(path))
    except Exception as exc:  # pyspark's AnalysisException and the JVM's errors alike
        raise InvalidRequest(
            f"dataset {dataset.name!r}: Spark cannot read {kind} {path} ({type(exc).__name__}); "
            f"check that it exists and is a well-formed {kind} file"
        ) from exc


def _check_values(
    session: Any,
    dataset: DatasetConfig,
    view: str,
    cells: dict[str, str],
    typed: dict[str, str],
    path: Path | str,
) -> None:
    """One pass over the data: count the values that do not fit their declared type."""
    checked = [c for c, t in dataset.columns.items() if t != "string"]
    if not checked:
        return
    counts = ", ".join(f"count_if({cells[c]} IS NOT NULL AND {typed[c]} IS NULL)" for c in checked)
    try:
        found = session.sql(f"SELECT {counts} FROM {_ident(view)}").collect()[0]
    except Exception as exc:
        raise InvalidRequest(
            f"dataset {dataset.name!r}: Spark cannot read {path} ({type(exc).__name__}); "
            "check that it is well-formed"
        ) from exc
    for column, count in zip(checked, found, strict=True):
        if count:
            typ = dataset.columns[column]
            raise InvalidRequest(
                f"dataset {dataset.name!r}: column {column!r} of {path} has {int(count)} "
                f"value(s) that are not {_EXPECTED[typ]}; fix the file or declare the "
                "column's type correctly"
            )
