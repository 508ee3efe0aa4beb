"""Common table expressions computed once, where the engine lets a statement say so."""

from __future__ import annotations

from typing import Any

# Engines that accept WITH name AS MATERIALIZED (...); others (Spark SQL) reject the word
# and evaluate the CTE as their planner chooses.
MATERIALIZING_DIALECTS = ("sqlite", "postgresql", "duckdb")


def materialized(cte: Any) -> Any:
    """Return cte marked MATERIALIZED on the engines that accept it (compiled per dialect)."""
    for dialect in MATERIALIZING_DIALECTS:
        cte = cte.prefix_with("MATERIALIZED", dialect=dialect)
    return cte
