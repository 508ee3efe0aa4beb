"""The histogram analysis: counts of a numeric column in bins every node shares.

Parameters: `column` (numeric), optional `filter`, and the bins, either
- `edges`: fixed, strictly increasing bin edges (2 to 1001 numbers); bins are
  [e0, e1), [e1, e2), ..., [e(k-1), ek] (the last closed), as numpy.histogram; values
  outside [e0, ek] are not counted; or
- `width` (and optional `origin`, default 0): bins [origin + i width, origin + (i+1) width)
  for every integer i, agreed by construction: each node counts in the same grid, from
  its first non-empty bin to its last (so its outer edges are rounded outward to the
  grid, never its exact minimum or maximum), and the coordinator joins the ranges.

Each node counts in its own SQL engine (GROUP BY a CASE over the edges, or FLOOR((x -
origin) / width)); no value reaches Python.

- node payload: edges: {"column", "edges": [...], "counts": [n | null, ...]};
                width: {"column", "width", "origin", "bins": [[i, n | null], ...]}
  Bins are checked as a one-way table with its total (fedtre.disclosure.tables): a bin
  holds 0 or at least `threshold` records (an empty bin reveals no one, see
  fedtre.disclosure.distributions), secondary suppression protects withheld bins against
  the total, and released counts are rounded.
- combined: {"column", "edges": [...], "counts": [n | null, ...],
             "withheld": [[bin index, [node, ...]], ...], "nodes": {...}}
  A bin is null when a node withheld it (a BLOCKED node withholds every bin); a bin
  outside a node's range counts 0 there. REFUSED and FAILED nodes are left out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

import sqlalchemy as sa

from fedtre.analyses.base import (
    NUMERIC_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
)
from fedtre.analyses.design import complete_cases
from fedtre.analyses.params import (
    check_keys,
    column_param,
    column_problems,
    complete_cohort,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import as_count, as_rows, malformed, partition
from fedtre.disclosure import distributions, tables
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"column": "age", "edges": [18, 30, 45, 60, 75, 100]} or {"column": "age", "width": 10}'
MAX_BINS = 1000


def _number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class HistogramAnalysis(Analysis):
    """Counts of a numeric column in fixed bins, or in bins of a shared width."""

    name = "histogram"
    description = "Counts of a numeric column in fixed bin edges or bins of an agreed width."

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("column",),
            optional=("edges", "width", "origin", "filter"),
            example=_EXAMPLE,
        )
        column = column_param(p, "column", analysis=self.name, example=_EXAMPLE)
        if column is None:
            raise InvalidRequest(f"histogram needs a numeric 'column', e.g. {_EXAMPLE}")
        edges, width = p.get("edges"), p.get("width")
        if (edges is None) == (width is None):
            raise InvalidRequest(f"histogram takes either 'edges' or 'width', e.g. {_EXAMPLE}")
        out: dict[str, Any] = {"column": column, "filter": filter_param(p)}
        if edges is not None:
            if p.get("origin") is not None:
                raise InvalidRequest("histogram 'origin' goes with 'width', not with 'edges'")
            if (
                not isinstance(edges, list)
                or not 2 <= len(edges) <= MAX_BINS + 1
                or not all(_number(e) for e in edges)
                or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
            ):
                raise InvalidRequest(
                    f"histogram 'edges' must be 2 to {MAX_BINS + 1} strictly increasing numbers, "
                    f"e.g. {_EXAMPLE}"
                )
            out["edges"] = [float(e) for e in edges]
        else:
            origin = p.get("origin", 0.0)
            origin = 0.0 if origin is None else origin
            if not _number(width) or not _number(origin) or width <= 0:
                raise InvalidRequest(
                    "histogram 'width' must be a positive number (and 'origin' a number), "
                    f"e.g. {_EXAMPLE}"
                )
            out["width"] = float(width)
            out["origin"] = float(origin)
        return out

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's records with a value of `column` (the counted ones, for fixed edges, and more)."""
        p = self.validate(params)
        return complete_cohort(p["filter"], [p["column"]])

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        return column_problems(
            p["column"], role="histogram", schema=schema, allowed=NUMERIC_TYPES
        ) + schema_filter_problems(p["filter"], schema)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table = source.table
        value = sa.cast(table.c[p["column"]], sa.Double)
        conditions = complete_cases(table, [p["column"]], p["filter"])
        if "edges" in p:
            edges = p["edges"]
            last = len(edges) - 2
            whens = [
                (
                    sa.and_(value >= lo, value <= hi if i == last else value < hi),
                    sa.literal(i),
                )
                for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False))
            ]
            index: sa.ColumnElement[Any] = sa.case(*whens, else_=None)
        else:
            index = sa.func.floor((value - p["origin"]) / p["width"])
        labelled = index.label("bin")
        query = sa.select(labelled, sa.func.count()).where(*conditions).group_by(labelled)
        found: dict[int, int] = {}
        with source.engine.connect() as conn:
            for i, n in conn.execute(query):
                if i is not None:
                    found[int(i)] = found.get(int(i), 0) + int(n)
        if "edges" in p:
            return {"counts": [found.get(i, 0) for i in range(len(p["edges"]) - 1)]}
        if not found:
            return {"bins": []}
        low, high = min(found), max(found)
        if high - low + 1 > MAX_BINS:
            raise InvalidRequest(
                f"the values at this node span more than {MAX_BINS} bins of this width; "
                "use a wider width"
            )
        return {"bins": [[i, found.get(i, 0)] for i in range(low, high + 1)]}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Protect the bins as a one-way table with its total; empty bins are safe."""
        p = self.validate(params)
        if "edges" in p:
            keys = list(range(len(raw["counts"])))
            counts = [int(n) for n in raw["counts"]]
        else:
            keys = [int(i) for i, _ in raw["bins"]]
            counts = [int(n) for _, n in raw["bins"]]
        # An empty bin says nobody has a value there: no one's attribute (distributions.py).
        bins_policy = dataclasses.replace(policy, zeros_disclosive=False)
        cells: dict[tuple[str | None, str | None], int] = {
            (str(k), None): n for k, n in zip(keys, counts, strict=True)
        }
        if not cells:
            cells = {("0", None): 0}
        protected = tables.protect_table(cells, bins_policy, two_way=False)
        released = [protected.cells[(str(k), None)] for k in keys]
        rules_ = (*protected.rules, distributions.EXTREMES_RULE)
        outcome = protected.outcome
        if outcome == Outcome.BLOCKED:
            return NodeOutput(outcome, {}, rules_)
        payload: dict[str, Any] = {"column": p["column"]}
        if "edges" in p:
            payload |= {"edges": p["edges"], "counts": released}
        else:
            payload |= {
                "width": p["width"],
                "origin": p["origin"],
                "bins": [[k, n] for k, n in zip(keys, released, strict=True)],
            }
        return NodeOutput(outcome, payload, rules_)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        by_node: dict[str, dict[int, int | None]] = {}
        for node, payload in part.included.items():
            if "edges" in p:
                released = payload.get("counts")
                if not isinstance(released, list) or len(released) != len(p["edges"]) - 1:
                    raise malformed(node, "'counts' does not match the edges")
                by_node[node] = {
                    i: as_count(n, node, "a bin count") for i, n in enumerate(released)
                }
            else:
                by_node[node] = {}
                for i, n in as_rows(payload, "bins", 2, node):
                    if not _number(i) or not float(i).is_integer():
                        raise malformed(node, "a bin index is not a whole number")
                    by_node[node][int(i)] = as_count(n, node, "a bin count")
        if "edges" in p:
            indices = list(range(len(p["edges"]) - 1))
        else:
            seen = [i for bins in by_node.values() for i in bins]
            indices = list(range(min(seen), max(seen) + 1)) if seen else []
        counts: list[int | None] = []
        withheld: list[list[Any]] = []
        for i in indices:
            missing = sorted(
                node for node, bins in by_node.items() if i in bins and bins[i] is None
            )
            missing += part.blocked
            if missing:
                counts.append(None)
                withheld.append([i, sorted(missing)])
            else:
                counts.append(sum((bins.get(i) or 0) for bins in by_node.values()))
        if "edges" in p:
            edges = list(p["edges"])
        else:
            edges = (
                [p["origin"] + i * p["width"] for i in [*indices, indices[-1] + 1]]
                if indices
                else []
            )
        return {
            "column": p["column"],
            "edges": edges,
            "counts": counts,
            "withheld": withheld,
            "nodes": part.nodes,
        }

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return one row per bin: index the bins as intervals (closed left), column n (Int64)."""
        import numpy as np
        import pandas as pd

        p = self.validate(params)
        if "counts" in payload:
            edges = list(payload.get("edges") or p.get("edges") or [])
            counts = list(payload.get("counts") or [])
        else:
            rows = as_rows(payload, "bins", 2, "(payload)")
            width, origin = p["width"], p["origin"]
            edges = [origin + int(i) * width for i, _ in rows]
            edges += [edges[-1] + width] if rows else []
            counts = [n for _, n in rows]
        if len(edges) < 2:
            return pd.DataFrame({"n": pd.array([], dtype="Int64")})
        index = pd.IntervalIndex.from_breaks(edges, closed="left", name=p["column"])
        values = [np.nan if n is None else float(n) for n in counts]
        return pd.DataFrame({"n": values}, index=index).astype({"n": "Int64"})
