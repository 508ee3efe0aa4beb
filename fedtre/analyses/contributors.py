"""The largest contributions per group, computed in the data source's SQL for dominance rules.

One query ranks the values within each group with ROW_NUMBER() OVER (PARTITION BY the
group ORDER BY value DESC) and keeps the first `limit` of each; window functions are
standard SQL (PostgreSQL, SQL Server, SQLite 3.25+, DuckDB, Spark SQL). The values are
needed only at the agent, for fedtre.disclosure.dominance, and are never released.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa


def top_values_by_group(
    conn: sa.Connection,
    value: sa.ColumnElement[Any],
    keys: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    limit: int,
) -> dict[tuple[Any, ...], list[float]]:
    """Return, per raw group key (a tuple; () when ungrouped), its `limit` largest values.

    Values are in descending order; rows where `value` is NULL must be excluded by
    `conditions`.
    """
    labelled = [k.label(f"g{i}") for i, k in enumerate(keys)]
    rank = sa.func.row_number().over(partition_by=list(keys) or None, order_by=value.desc())
    ranked = sa.select(*labelled, value.label("v"), rank.label("rn")).where(*conditions).subquery()
    group_cols = [ranked.c[f"g{i}"] for i in range(len(keys))]
    query = sa.select(*group_cols, ranked.c.v).where(ranked.c.rn <= limit).order_by(ranked.c.rn)
    found: dict[tuple[Any, ...], list[float]] = {}
    for row in conn.execute(query):
        found.setdefault(tuple(row[:-1]), []).append(float(row[-1]))
    return found
