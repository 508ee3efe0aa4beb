"""The largest contributions per group, computed in the data source's SQL for dominance rules.

One query ranks the values within each group with ROW_NUMBER() OVER (PARTITION BY the
group ORDER BY value DESC) and keeps the first `limit` of each; window functions are
standard SQL (PostgreSQL, SQL Server, SQLite 3.25+, DuckDB, Spark SQL). The values are
needed only at the agent, for fedtre.disclosure.dominance, and are never released.

SQLite, single-threaded, sorts every row for that window (20 s of a 10-million-row
summary's 42 s, bench/README.md); when the caller knows the groups and they are few, it
asks each group's `ORDER BY value DESC LIMIT n` instead, which SQLite keeps in a bounded
sorter during one scan (about 1 s each at that size).

Per column rather than per group (correlation, the model analyses: each numeric column's
total is judged): top_values_of_columns gives each column's largest values over the
output's records, and contribution packs them with the column's total and minimum (which
the caller sums in its own query) for fedtre.disclosure.dominance.columns_dominance_rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

# At most this many groups are asked one by one (SQLite); more are ranked in one window.
PER_GROUP_MAX = 16


def top_values_by_group(
    conn: sa.Connection,
    value: sa.ColumnElement[Any],
    keys: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    limit: int,
    groups: Sequence[tuple[Any, ...]] | None = None,
) -> dict[tuple[Any, ...], list[float]]:
    """Return, per raw group key (a tuple; () when ungrouped), its `limit` largest values.

    Values are in descending order; rows where `value` is NULL must be excluded by
    `conditions`. groups, when the caller already has them, are the raw group keys.
    """
    if groups is not None and len(groups) <= PER_GROUP_MAX and conn.dialect.name == "sqlite":
        return _per_group(conn, value, keys, conditions, limit=limit, groups=groups)
    labelled = [k.label(f"g{i}") for i, k in enumerate(keys)]
    rank = sa.func.row_number().over(partition_by=list(keys) or None, order_by=value.desc())
    ranked = sa.select(*labelled, value.label("v"), rank.label("rn")).where(*conditions).subquery()
    group_cols = [ranked.c[f"g{i}"] for i in range(len(keys))]
    query = sa.select(*group_cols, ranked.c.v).where(ranked.c.rn <= limit).order_by(ranked.c.rn)
    found: dict[tuple[Any, ...], list[float]] = {}
    for row in conn.execute(query):
        found.setdefault(tuple(row[:-1]), []).append(float(row[-1]))
    return found


def _per_group(
    conn: sa.Connection,
    value: sa.ColumnElement[Any],
    keys: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    limit: int,
    groups: Sequence[tuple[Any, ...]],
) -> dict[tuple[Any, ...], list[float]]:
    found: dict[tuple[Any, ...], list[float]] = {}
    for group in groups:
        match = [k.is_(None) if g is None else k == g for k, g in zip(keys, group, strict=True)]
        query = sa.select(value).where(*conditions, *match).order_by(value.desc()).limit(limit)
        values = [float(v) for (v,) in conn.execute(query)]
        if values:
            found[tuple(group)] = values
    return found


def contribution(total: Any, minimum: Any, top: Sequence[float]) -> dict[str, Any]:
    """Return one column's entry for columns_dominance_rules from its SUM, MIN and top values."""
    return {
        "total": float(total or 0.0),
        "minimum": None if minimum is None else float(minimum),
        "top": [float(v) for v in top],
    }


def top_values_of_columns(
    conn: sa.Connection,
    values: Mapping[str, sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    limit: int,
) -> dict[str, list[float]]:
    """Return each named expression's `limit` largest values (descending) over the records.

    One `ORDER BY value DESC LIMIT limit` query per column: a bounded sort in one scan.
    """
    found: dict[str, list[float]] = {}
    for name, value in values.items():
        # NULLs excluded: PostgreSQL sorts them first in descending order.
        query = (
            sa.select(value)
            .where(*conditions, value.is_not(None))
            .order_by(value.desc())
            .limit(limit)
        )
        found[name] = [float(v) for (v,) in conn.execute(query)]
    return found
