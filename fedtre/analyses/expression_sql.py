"""Derived variables in SQL: an expression (fedtre.analyses.expressions) as SQLAlchemy Core.

Only the table's declared Column objects, bound parameters and the functions ln, exp,
sqrt (guarded, so an undefined value is NULL on every engine rather than an error on
PostgreSQL, NaN on DuckDB and NULL on SQLite) appear in the SQL; numbers are doubles
before any arithmetic (integer division differs between engines), and the days between
two dates are written per dialect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from fedtre.analyses.expressions import (
    COMPARE,
    DAYS_PER_YEAR,
    EXP_LIMIT,
    Binary,
    Call,
    Const,
    Expr,
    Map,
    Name,
    Negate,
    Parsed,
    Seq,
    Typer,
    band_labels,
    parse_date,
)


class _DaysBetween(FunctionElement[float]):
    """The days from date a to date b, as each engine writes it."""

    type = sa.Double()
    inherit_cache = True
    name = "days_between"


@compiles(_DaysBetween)
def _days_default(element: Any, compiler: Any, **kw: Any) -> str:
    # PostgreSQL (and most engines): date - date is a whole number of days.
    a, b = element.clauses
    return f"CAST(({compiler.process(b, **kw)} - {compiler.process(a, **kw)}) AS DOUBLE PRECISION)"


@compiles(_DaysBetween, "sqlite")
def _days_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # SQLite keeps dates as ISO text.
    a, b = element.clauses
    return f"(julianday({compiler.process(b, **kw)}) - julianday({compiler.process(a, **kw)}))"


@compiles(_DaysBetween, "duckdb")
def _days_duckdb(element: Any, compiler: Any, **kw: Any) -> str:
    a, b = element.clauses
    return (
        f"CAST(date_diff('day', {compiler.process(a, **kw)}, {compiler.process(b, **kw)}) "
        "AS DOUBLE)"
    )


@compiles(_DaysBetween, "spark")
def _days_spark(element: Any, compiler: Any, **kw: Any) -> str:
    a, b = element.clauses
    return f"CAST(datediff({compiler.process(b, **kw)}, {compiler.process(a, **kw)}) AS DOUBLE)"


def compile_expression(
    parsed: Parsed, table: sa.FromClause, columns: Mapping[str, str]
) -> sa.ColumnElement[Any]:
    """Return the expression as SQLAlchemy Core over the table's declared Column objects.

    columns: the declared types (the expression is type-checked first). Raises
    InvalidRequest as expression_type does.
    """
    typer = Typer(parsed, columns, "")
    kind = typer.type_of(parsed.tree)
    value = _Compiler(table, typer).sql(parsed.tree)
    return _finite(value) if kind in ("integer", "float") else value


def _finite(value: Any) -> Any:
    """value, or NULL where it is not a finite number.

    Arithmetic can leave the doubles' range for one record only (`1e300 / d` where d is
    tiny for the target alone): SQLite and DuckDB then give inf or NaN, which an analysis
    would carry into a failure or a missing figure that says so. Missing instead, the
    record leaves the analysis's records, a narrowing the differencing memory's question
    holds (differencing.question_of). Only the expression's value is guarded: an infinity
    inside it either reaches the value or becomes an ordinary number (1 / inf is 0), and
    NULLIF, unlike CASE, names its argument once, so the SQL stays the expression's size.
    (PostgreSQL raises on overflow instead: docs/disclosure.md, threat model.)
    """
    for special in (math.inf, -math.inf, math.nan):
        value = sa.func.nullif(value, sa.literal(special, sa.Double))
    return value


class _Compiler:
    def __init__(self, table: sa.FromClause, typer: Typer) -> None:
        self.table = table
        self.typer = typer
        self.calls: dict[str, Callable[[Call], Any]] = {
            "I": lambda n: self.sql(n.args[0]),
            "log": lambda n: self._guarded(n, sa.func.ln, lambda x: x > 0),
            "sqrt": lambda n: self._guarded(n, sa.func.sqrt, lambda x: x >= 0),
            "exp": lambda n: self._guarded(n, sa.func.exp, lambda x: x <= EXP_LIMIT),
            "bands": self._bands,
            "recode": self._recode,
            "years_between": self._years,
        }

    def sql(self, node: Expr) -> Any:
        if isinstance(node, Name):
            return self.table.c[node.name]
        if isinstance(node, Const):
            return sa.literal(node.value)
        if isinstance(node, Negate):
            return -self.number(node.operand)
        if isinstance(node, Binary):
            return self._binary(node)
        assert isinstance(node, Call)
        return self.calls[node.func](node)

    def number(self, node: Expr) -> Any:
        """The node as a double (booleans 1.0 / 0.0; NULL stays NULL)."""
        if isinstance(node, Const):
            return sa.literal(float(node.value), sa.Double)
        value = self.sql(node)
        if self._kind(node) == "boolean":
            return sa.case((value.is_(None), sa.null()), (value, 1.0), else_=0.0)
        return sa.cast(value, sa.Double)

    def _kind(self, node: Expr) -> str:
        return self.typer._type(node).removeprefix("const ")

    def _guarded(self, node: Call, func: Any, defined: Callable[[Any], Any]) -> Any:
        x = self.number(node.args[0])
        return sa.case((defined(x), func(x)), else_=sa.null())

    def _binary(self, node: Binary) -> Any:
        if node.op == ":":
            if self._kind(node.left) == "string":
                return self.sql(node.left) + sa.literal(":") + self.sql(node.right)
            return self.number(node.left) * self.number(node.right)
        if node.op in COMPARE:
            left, right = self.sql(node.left), self.sql(node.right)
            left, right = (
                self._typed_constant(node.left, left, right),
                self._typed_constant(node.right, right, left),
            )
            ops = {
                "==": lambda a, b: a == b,
                "!=": lambda a, b: a != b,
                "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b,
            }
            return ops[node.op](left, right)
        left, right = self.number(node.left), self.number(node.right)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        if node.op == "/":
            return left / sa.func.nullif(right, 0.0)
        assert isinstance(node.right, Const)
        product = left
        for _ in range(int(node.right.value) - 1):
            product = product * left
        return product

    def _typed_constant(self, node: Expr, value: Any, other: Any) -> Any:
        """A constant compared with a column, bound with the column's type (dates as dates)."""
        if not isinstance(node, Const):
            return value
        if isinstance(node.value, str) and isinstance(other.type, sa.Date):
            return sa.literal(parse_date(node.value), sa.Date)
        if isinstance(node.value, bool) and not isinstance(other.type, sa.Boolean):
            return sa.literal(int(node.value))
        if isinstance(node.value, float):
            # Bound as an integer column's type, PostgreSQL would round it (40.4 -> 40).
            return sa.literal(node.value, sa.Double)
        return sa.literal(node.value, other.type)

    def _bands(self, node: Call) -> Any:
        x = self.number(node.args[0])
        assert isinstance(node.args[1], Seq)
        edges = [float(i.value) for i in node.args[1].items if isinstance(i, Const)]
        labels = band_labels(edges)
        whens = [(x < sa.literal(edges[0], sa.Double), sa.literal(labels[0], sa.String))]
        for high, label in zip(edges[1:], labels[1:-1], strict=True):
            whens.append((x < sa.literal(high, sa.Double), sa.literal(label, sa.String)))
        # The last band is written out (no ELSE), so a missing value stays missing.
        whens.append((x >= sa.literal(edges[-1], sa.Double), sa.literal(labels[-1], sa.String)))
        return sa.case(*whens, else_=sa.null())

    def _recode(self, node: Call) -> Any:
        column = self.sql(node.args[0])
        assert isinstance(node.args[1], Map)
        whens = [
            (
                column == self._typed_constant(old, None, column),
                self._typed_constant(new, None, column),
            )
            for old, new in node.args[1].pairs
        ]
        return sa.case(*whens, else_=column)

    def _years(self, node: Call) -> Any:
        a, b = (self._date(arg) for arg in node.args)
        return _DaysBetween(a, b) / sa.literal(DAYS_PER_YEAR, sa.Double)

    def _date(self, node: Expr) -> Any:
        if isinstance(node, Const):
            return sa.literal(parse_date(node.value), sa.Date)
        return self.sql(node)


# --------------------------------------------------------------------------- SQLite


_SQLITE_MATH_CHECKED: set[int] = set()


def ensure_sqlite_math(engine: sa.Engine) -> None:
    """Give a SQLite engine ln, exp and sqrt when its SQLite was built without them (the
    math functions are a compile-time option); other engines have them built in."""
    if engine.dialect.name != "sqlite" or id(engine) in _SQLITE_MATH_CHECKED:
        return
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql("SELECT ln(1.0), exp(0.0), sqrt(1.0)").all()
        except sa.exc.OperationalError:
            register_sqlite_math(engine)
    _SQLITE_MATH_CHECKED.add(id(engine))


def register_sqlite_math(engine: sa.Engine) -> None:
    """Register Python's ln, exp and sqrt on every connection of a SQLite engine."""

    # On every checkout, so connections pooled before this call have them too.
    @sa.event.listens_for(engine, "checkout")
    def _register(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # The SQL guards each call (log of x > 0, ...), so these see only valid arguments.
        for name, func in (("ln", math.log), ("exp", math.exp), ("sqrt", math.sqrt)):
            dbapi_connection.create_function(name, 1, _null_safe(func), deterministic=True)


def _null_safe(func: Callable[[float], float]) -> Callable[[Any], float | None]:
    def call(x: Any) -> float | None:
        return None if x is None else func(float(x))

    return call
