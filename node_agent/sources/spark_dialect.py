"""A SQLAlchemy dialect "spark": Core statements compiled to Spark SQL, run in a SparkSession.

The analyses build SQLAlchemy Core statements; this dialect compiles them to Spark SQL
(backtick-quoted identifiers, Spark's type names, `/` as true division) and a minimal DBAPI
2.0 shim runs them through `SparkSession.sql(text, args=[...])`: every value is a bound
parameter marker (`?`, Spark 3.5 and later), never pasted into the SQL text. Results are
collected to the agent, which holds only aggregates (the analyses' statements return
nothing else).

Why our own: the SQLAlchemy dialects for Spark SQL on PyPI talk to a server over the network
(databricks-sqlalchemy to a Databricks SQL warehouse; PyHive to a Hive/Spark Thrift server,
and it is unmaintained); neither runs in a SparkSession the agent starts itself, and their
compilers bring nothing the analyses need beyond what the few rules below give.

pyspark is imported only when a connection is made (the `spark` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import registry
from sqlalchemy.engine import default
from sqlalchemy.engine.interfaces import Dialect, IsolationLevel
from sqlalchemy.sql import compiler

NAME = "spark"


# -- DBAPI 2.0 shim over a SparkSession --------------------------------------------------

apilevel = "2.0"
threadsafety = 2  # a SparkSession runs queries from several threads at once
paramstyle = "qmark"


class Warning(Exception):  # noqa: A001 - the name DBAPI 2.0 requires
    """DBAPI warning."""


class Error(Exception):
    """Base of the DBAPI errors."""


class InterfaceError(Error):
    """DBAPI interface error."""


class DatabaseError(Error):
    """Spark refused or failed the statement (its message is kept)."""


class DataError(DatabaseError):
    """DBAPI data error."""


class OperationalError(DatabaseError):
    """DBAPI operational error."""


class IntegrityError(DatabaseError):
    """DBAPI integrity error."""


class InternalError(DatabaseError):
    """DBAPI internal error."""


class ProgrammingError(DatabaseError):
    """DBAPI programming error."""


class NotSupportedError(DatabaseError):
    """DBAPI not supported error."""


class Cursor:
    """Runs one statement at a time and holds its collected rows (aggregates: few)."""

    arraysize = 1

    def __init__(self, session: Any) -> None:
        self._session = session
        self._rows: list[tuple[Any, ...]] = []
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.lastrowid = None

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> None:
        args = list(parameters) if parameters else None
        try:
            frame = self._session.sql(operation, args=args)
            rows = frame.collect()
            fields = frame.schema.fields
        except Exception as exc:  # pyspark's and py4j's errors alike
            raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
        self._rows = [tuple(row) for row in rows]
        self.description = [
            (f.name, f.dataType.simpleString(), None, None, None, None, f.nullable) for f in fields
        ]
        self.rowcount = len(self._rows)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any]]) -> None:
        for parameters in seq_of_parameters:
            self.execute(operation, parameters)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        size = size or self.arraysize
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    def fetchall(self) -> list[tuple[Any, ...]]:
        taken, self._rows = self._rows, []
        return taken

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def close(self) -> None:
        self._rows = []


class Connection:
    """A DBAPI connection: the SparkSession (queries only; nothing to commit or close)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def cursor(self) -> Cursor:
        return Cursor(self.session)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass  # the session outlives the pooled connection; the source owns it


def connect(session: Any) -> Connection:
    """Return a DBAPI connection running statements in session (a pyspark SparkSession)."""
    return Connection(session)


# -- the dialect ---------------------------------------------------------------------------


class SparkTypeCompiler(compiler.GenericTypeCompiler):
    """Spark SQL's type names (STRING has no length; every float is a DOUBLE)."""

    def visit_INTEGER(self, type_: Any, **kw: Any) -> str:
        return "INT"

    def visit_SMALLINT(self, type_: Any, **kw: Any) -> str:
        return "SMALLINT"

    def visit_BIGINT(self, type_: Any, **kw: Any) -> str:
        return "BIGINT"

    def visit_FLOAT(self, type_: Any, **kw: Any) -> str:
        return "DOUBLE"

    visit_REAL = visit_DOUBLE = visit_DOUBLE_PRECISION = visit_FLOAT

    def visit_NUMERIC(self, type_: Any, **kw: Any) -> str:
        if type_.precision is None:
            return "DECIMAL(38, 18)"
        return f"DECIMAL({type_.precision}, {type_.scale or 0})"

    visit_DECIMAL = visit_NUMERIC

    def visit_VARCHAR(self, type_: Any, **kw: Any) -> str:
        return "STRING"

    visit_CHAR = visit_NVARCHAR = visit_NCHAR = visit_TEXT = visit_CLOB = visit_VARCHAR

    def visit_BOOLEAN(self, type_: Any, **kw: Any) -> str:
        return "BOOLEAN"

    def visit_DATETIME(self, type_: Any, **kw: Any) -> str:
        return "TIMESTAMP"

    visit_TIMESTAMP = visit_DATETIME


class SparkCompiler(compiler.SQLCompiler):
    """Spark SQL statements."""

    def limit_clause(self, select: Any, **kw: Any) -> str:
        # Rendered as numbers when the statement runs (post-compile, so a cached statement
        # takes each call's own limit): a LIMIT is the statement's shape, not a row's value.
        literal = {**kw, "literal_execute": True}
        text = ""
        if select._limit_clause is not None:
            text += "\n LIMIT " + self.process(select._limit_clause, **literal)
        if select._offset_clause is not None:
            text += " OFFSET " + self.process(select._offset_clause, **literal)
        return text


class SparkIdentifierPreparer(compiler.IdentifierPreparer):
    """`name`, a backtick doubled inside."""

    def __init__(
        self,
        dialect: Dialect,
        initial_quote: str = "`",
        final_quote: str | None = None,
        escape_quote: str = "`",
        quote_case_sensitive_collations: bool = True,
        omit_schema: bool = False,
    ) -> None:
        super().__init__(
            dialect,
            initial_quote,
            final_quote,
            escape_quote,
            quote_case_sensitive_collations,
            omit_schema,
        )


class SparkDialect(default.DefaultDialect):
    """Spark SQL through a SparkSession (create_engine("spark://", creator=...))."""

    name = NAME
    driver = "pyspark"
    statement_compiler = SparkCompiler
    type_compiler_cls = SparkTypeCompiler
    preparer = SparkIdentifierPreparer
    default_paramstyle = "qmark"
    supports_statement_cache = True
    supports_native_boolean = True
    supports_native_decimal = True
    # Spark's `/` is true division for integers too: no cast to NUMERIC needed.
    div_is_floordiv = False
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    supports_multivalues_insert = False
    use_insertmanyvalues = False
    supports_simple_order_by_label = True
    max_identifier_length = 255

    @classmethod
    def import_dbapi(cls) -> Any:
        import node_agent.sources.spark_dialect as module

        return module

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        version = connection.connection.dbapi_connection.session.version
        return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())

    def _get_default_schema_name(self, connection: Any) -> str:
        return "default"

    def get_isolation_level(self, dbapi_connection: Any) -> IsolationLevel:
        return "AUTOCOMMIT"

    def do_ping(self, dbapi_connection: Any) -> bool:
        return True

    def has_table(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> bool:
        session = connection.connection.dbapi_connection.session
        name = f"{schema}.{table_name}" if schema else table_name
        return bool(session.catalog.tableExists(name))


registry.register(NAME, "node_agent.sources.spark_dialect", "SparkDialect")


def create_spark_engine(session: Any) -> sa.Engine:
    """Return an engine whose connections run their statements in session."""
    return sa.create_engine(f"{NAME}://", creator=lambda: connect(session))
