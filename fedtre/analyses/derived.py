"""Derived variables in a job: which the parameters use, their types, and the source that has them.

An analysis names columns by text; a name that is not a declared column is a derived
variable (fedtre.analyses.expressions), held in its canonical text. This module finds
the derived variables of a job's validated parameters, gives each its type next to the
declared columns (`resolve_schema`: the coordinator at submit and dry-run, the agent
before it runs), and at the agent adds each as a column of the data source
(`with_derived`), so every analysis reads a derived variable exactly as it reads a
declared one: `source.table.c[name]`, `source.schema.columns[name]`.

A derived variable gets no grid (DatasetSchema.grids): the TRE's grids are for declared
columns, so no released bound (histogram, quantiles, survival times) ever comes from a
derived numeric. Its groups (levels of `by`, cells) and its cohorts (filters) pass the
same release stage and differencing memory as a declared column's, under its canonical
text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import visitors
from sqlalchemy.sql.util import ClauseAdapter

from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.analyses.expression_sql import compile_expression, ensure_sqlite_math
from fedtre.analyses.expressions import (
    FEATURES,
    expression_type,
    features_of,
    is_expression,
    parse_expression,
)
from fedtre.analyses.filters import filter_columns
from fedtre.errors import InvalidRequest

# The parameters of the catalogue's analyses that hold one column (or a list of them).
COLUMN_KEYS = (
    "column",
    "columns",
    "rows",
    "by",
    "outcome",
    "offset",
    "time",
    "event",
    "strata",
)


def column_references(params: Mapping[str, Any]) -> list[str]:
    """Return every column name a job's validated parameters use (declared or derived)."""
    from fedtre.analyses.design import parse_covariate

    names: list[str] = []
    for key in COLUMN_KEYS:
        value = params.get(key)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list | tuple):
            names += [v for v in value if isinstance(v, str)]
    covariates = params.get("covariates")
    if isinstance(covariates, list | tuple):
        names += [parse_covariate(c).column for c in covariates if isinstance(c, str)]
    if params.get("filter") is not None:
        names += sorted(filter_columns(params["filter"]))
    return list(dict.fromkeys(names))


def derived_names(params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
    """Return the parameters' column names that are not declared: the derived variables."""
    return [n for n in column_references(params) if n not in schema.columns and is_expression(n)]


def resolve_schema(
    params: Mapping[str, Any], schema: DatasetSchema
) -> tuple[DatasetSchema, list[str]]:
    """Return (schema with the parameters' derived variables among its columns, problems).

    Each problem points at the token of an expression that names an undeclared column or
    uses a function on a value of the wrong type; such an expression is left out.
    """
    columns = dict(schema.columns)
    problems: list[str] = []
    for name in derived_names(params, schema):
        try:
            columns[name] = expression_type(parse_expression(name), schema.columns, schema.name)
        except InvalidRequest as exc:
            problems.append(f"derived variable {name}: {exc}")
    return replace(schema, columns=columns), problems


def policy_problems(
    params: Mapping[str, Any], schema: DatasetSchema, allowed: frozenset[str]
) -> list[str]:
    """Return why this TRE's policy refuses the parameters' derived variables (none: []).

    allowed: the functions and operator families the TRE allows ([policy] derived).
    """
    problems: list[str] = []
    for name in derived_names(params, schema):
        try:
            used = features_of(parse_expression(name).tree)
        except InvalidRequest:
            continue  # reported by resolve_schema
        if not allowed:
            problems.append(
                f"this TRE does not allow derived variables ({name}); ask its operator, or use "
                "declared columns only"
            )
            continue
        refused = sorted(used - allowed)
        if refused:
            problems.append(
                f"this TRE does not allow {', '.join(refused)} in derived variables ({name}); "
                f"it allows: {', '.join(sorted(allowed)) or 'none'}"
            )
    return problems


def check_features(names: Iterable[str], *, where: str) -> tuple[str, ...]:
    """Return a TRE's list of allowed functions, checked; raises InvalidRequest naming `where`."""
    items = tuple(names)
    unknown = sorted(set(items) - set(FEATURES))
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown function(s) {unknown}; derived variables know {list(FEATURES)}"
        )
    return tuple(dict.fromkeys(items))


def with_derived(source: DataSource, params: Mapping[str, Any]) -> DataSource:
    """Return source with the parameters' derived variables as columns (source itself when
    there are none); raises InvalidRequest when an expression does not fit the schema.

    The table becomes a subquery over the declared table that selects its columns and one
    column per derived variable, computed by the engine; the record key and record id
    (differencing memory, cell keys) are carried over to it unchanged.
    """
    schema, problems = resolve_schema(params, source.schema)
    if problems:
        raise InvalidRequest("; ".join(problems))
    names = derived_names(params, source.schema)
    if not names:
        return source
    from fedtre.disclosure.cellkey import record_id_of, record_key_of

    # Keyed on the declared table first: derived columns never change a record's key.
    record_key, record_id = record_key_of(source), record_id_of(source)
    ensure_sqlite_math(source.engine)
    base = source.table
    # Labels no column of the table has (a TRE may declare a column named like one).
    taken = {c.name for c in base.c}
    labels = (f"fedtre_derived_{i}" for i in range(len(names) + len(taken)))
    free = [label for label in labels if label not in taken][: len(names)]
    derived = []
    for name, sql_name in zip(names, free, strict=True):
        label = compile_expression(parse_expression(name), base, source.schema.columns).label(
            sql_name
        )
        # The column is reached by the expression's text (table.c[name]) but named by a
        # short label in SQL: engines cap identifiers (PostgreSQL at 63 bytes).
        label.key = name
        derived.append(label)
    # Columns the keys read that are not declared (a TRE's key column) come along too.
    keyed = [
        c
        for expr in (record_key, record_id)
        for c in visitors.iterate(expr)
        if isinstance(c, sa.ColumnClause) and c.table is base and c.key not in base.c
    ]
    view = sa.select(*base.c, *dict.fromkeys(keyed), *derived).subquery("fedtre_derived")
    adapter = ClauseAdapter(view)
    return replace(
        source,
        table=view,
        schema=schema,
        record_key=adapter.traverse(record_key),
        record_id=adapter.traverse(record_id),
    )
