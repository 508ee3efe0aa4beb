"""The quantiles analysis: approximate pooled quantiles of a numeric column, each with a guaranteed bracket.

Parameters: `column` (numeric), `width` (the resolution: a grid of bins [origin + i width,
origin + (i+1) width)), optional `origin` (default 0), optional `probs` (default [0.25, 0.5,
0.75]; each strictly between 0 and 1), optional `filter`.

Method: a fine histogram every node shares. Each node counts its values per grid bin in
its own SQL engine (GROUP BY FLOOR((x - origin) / width)), then merges consecutive
non-empty bins into intervals until each holds at least max(threshold, 1) records (and at
least n / 2000, so at most about 2000 intervals leave); a short last run joins the
interval before it. It releases the intervals (grid-aligned bounds, never a data value:
the outer bounds are the data's range rounded outward to the grid) with their exact
counts (fedtre.disclosure.distributions: no interval below the threshold; the minimum and
maximum are never released). A node with fewer than max(threshold, 1) values is BLOCKED.

The coordinator knows, for every node and every bound e of that node's intervals, exactly
how many of its values lie below e. That brackets the pooled empirical CDF at every x,
and so brackets every order statistic:

    lower(q) <= the pooled sample quantile (numpy's default, linear) <= upper(q)

always, with rounding, suppression and merging accounted for (the counts are exact). The
estimate spreads each interval's records uniformly across it and inverts the pooled CDF
at rank q (n - 1) + 1/2. With threshold 0 the intervals are the grid bins, so the bracket
runs from the bin of the order statistic just below the quantile to the bin of the one
just above (the two values numpy interpolates between): at most 2 x width plus the gap
between those two values, so 2 x width wherever the data are denser than the grid, wider
in sparse tails; with a threshold it widens to about the span of `threshold` records at
each node around the quantile. Quantiles are approximate by
design: exact pooled quantiles would need values no node may release.

- node payload: {"column", "width", "origin", "n", "intervals": [[i_low, i_high, n], ...]}
  (interval k covers [origin + i_low width, origin + i_high width)).
- combined: {"column", "n", "probs", "quantiles": [[q, estimate, lower, upper], ...],
             "withheld_by", "nodes"}; all null when a node blocked its output.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import sqlalchemy as sa

from fedtre.analyses.base import (
    NUMERIC_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
    RuleResult,
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
from fedtre.disclosure import distributions, rules
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"column": "bmi", "width": 0.1, "probs": [0.25, 0.5, 0.75]}'
DEFAULT_PROBS = (0.25, 0.5, 0.75)
MAX_PROBS = 99
# A node's distinct non-empty grid bins it will read; finer grids are refused.
MAX_GRID_BINS = 200_000
# About this many intervals at most leave a node.
MAX_INTERVALS = 2000


def _number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class QuantilesAnalysis(Analysis):
    """Approximate quantiles of a numeric column, with a guaranteed bracket around each."""

    name = "quantiles"
    description = "Approximate pooled quantiles from a shared fine histogram, with error brackets."

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("column", "width"),
            optional=("origin", "probs", "filter"),
            example=_EXAMPLE,
        )
        column = column_param(p, "column", analysis=self.name, example=_EXAMPLE)
        if column is None:
            raise InvalidRequest(f"quantiles needs a numeric 'column', e.g. {_EXAMPLE}")
        width, origin = p.get("width"), p.get("origin", 0.0)
        origin = 0.0 if origin is None else origin
        if not _number(width) or not _number(origin) or width <= 0:
            raise InvalidRequest(
                "quantiles 'width' (the resolution) must be a positive number and 'origin' a "
                f"number, e.g. {_EXAMPLE}"
            )
        probs = p.get("probs")
        probs = list(DEFAULT_PROBS) if probs is None else probs
        if (
            not isinstance(probs, list)
            or not 1 <= len(probs) <= MAX_PROBS
            or not all(_number(q) and 0.0 < q < 1.0 for q in probs)
        ):
            raise InvalidRequest(
                f"quantiles 'probs' must list 1 to {MAX_PROBS} numbers strictly between 0 and 1, "
                f"e.g. {_EXAMPLE}"
            )
        return {
            "column": column,
            "width": float(width),
            "origin": float(origin),
            "probs": [float(q) for q in probs],
            "filter": filter_param(p),
        }

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's records with a value of `column`."""
        p = self.validate(params)
        return complete_cohort(p["filter"], [p["column"]])

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        return column_problems(
            p["column"], role="quantiles", schema=schema, allowed=NUMERIC_TYPES
        ) + schema_filter_problems(p["filter"], schema)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table = source.table
        value = sa.cast(table.c[p["column"]], sa.Double)
        conditions = complete_cases(table, [p["column"]], p["filter"])
        index = sa.func.floor((value - p["origin"]) / p["width"]).label("bin")
        query = sa.select(index, sa.func.count()).where(*conditions).group_by(index).order_by(index)
        bins: list[list[int]] = []
        with source.engine.connect() as conn:
            for i, n in conn.execution_options(yield_per=10_000).execute(query):
                if bins and bins[-1][0] == int(i):
                    bins[-1][1] += int(n)
                else:
                    bins.append([int(i), int(n)])
                if len(bins) > MAX_GRID_BINS:
                    raise InvalidRequest(
                        "the grid is too fine for this node's data (more than "
                        f"{MAX_GRID_BINS} non-empty bins); use a wider width"
                    )
        return {"bins": bins}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Merge grid bins into intervals of at least max(threshold, 1) records each."""
        p = self.validate(params)
        bins = [(int(i), int(n)) for i, n in raw["bins"]]
        n = sum(c for _, c in bins)
        need = max(policy.threshold, 1, math.ceil(n / MAX_INTERVALS))
        t = policy.threshold
        if n < max(t, 1):
            rule = RuleResult(
                rules.THRESHOLD, False, f"fewer than {max(t, 1)} values, so nothing is released"
            )
            return NodeOutput(Outcome.BLOCKED, {}, (rule, distributions.EXTREMES_RULE))
        intervals = merge_bins(bins, need)
        _, threshold_rule = distributions.check_bins([c for _, _, c in intervals], policy)
        merged = len(intervals) < len(bins)
        detail = f"values are released as counts in {len(intervals)} grid-aligned intervals"
        if merged:
            detail += f" (merged from {len(bins)} non-empty bins so each holds at least {need})"
        checked = (
            threshold_rule,
            RuleResult(rules.QUANTILE, True, detail),
            distributions.EXTREMES_RULE,
        )
        payload = {
            "column": p["column"],
            "width": p["width"],
            "origin": p["origin"],
            "n": n,
            "intervals": [list(iv) for iv in intervals],
        }
        return NodeOutput(Outcome.RELEASED, payload, checked)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        base = {"column": p["column"], "probs": p["probs"]}
        if part.blocked or not part.included:
            return {
                **base,
                "n": None,
                "quantiles": [[q, None, None, None] for q in p["probs"]],
                "withheld_by": part.blocked,
                "nodes": part.nodes,
            }
        nodes: list[list[tuple[int, int, int]]] = []
        for node, payload in part.included.items():
            intervals = []
            for lo, hi, c in as_rows(payload, "intervals", 3, node):
                if not (_number(lo) and _number(hi)) or hi <= lo:
                    raise malformed(node, "an interval's bounds are not increasing grid indices")
                count = as_count(c, node, "an interval count")
                intervals.append((int(lo), int(hi), count or 0))
            nodes.append(sorted(intervals))
        brackets = QuantileBrackets(nodes)
        width, origin = p["width"], p["origin"]

        def at(i: float) -> float:
            return origin + i * width

        quantiles = []
        for q in p["probs"]:
            estimate, lower, upper = brackets.quantile(q)
            quantiles.append([q, at(estimate), at(lower), at(upper)])
        return {
            **base,
            "n": brackets.n,
            "quantiles": quantiles,
            "withheld_by": [],
            "nodes": part.nodes,
        }

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return one row per probability: columns value (the estimate), lower, upper."""
        import numpy as np
        import pandas as pd

        if "quantiles" not in payload:
            return None
        rows = as_rows(payload, "quantiles", 4, "(payload)")

        def col(i: int) -> list[float]:
            return [np.nan if r[i] is None else float(r[i]) for r in rows]

        index = pd.Index([float(r[0]) for r in rows], name="prob")
        return pd.DataFrame({"value": col(1), "lower": col(2), "upper": col(3)}, index=index)


def merge_bins(bins: Sequence[tuple[int, int]], need: int) -> list[tuple[int, int, int]]:
    """Merge consecutive non-empty grid bins (index, count) into intervals of >= need records.

    Returns (first index, last index + 1, count) per interval; a short last run joins the
    interval before it.
    """
    intervals: list[tuple[int, int, int]] = []
    start, count = None, 0
    for i, n in bins:
        if start is None:
            start = i
        count += n
        if count >= need:
            intervals.append((start, i + 1, count))
            start, count = None, 0
    if start is not None:
        if intervals:
            lo, _, c = intervals.pop()
            intervals.append((lo, bins[-1][0] + 1, c + count))
        else:
            intervals.append((start, bins[-1][0] + 1, count))
    return intervals


class QuantileBrackets:
    """The pooled empirical CDF, known exactly at each node's interval bounds (grid indices)."""

    def __init__(self, nodes: Sequence[Sequence[tuple[int, int, int]]]) -> None:
        self.nodes = [list(intervals) for intervals in nodes]
        self.n = sum(c for intervals in self.nodes for _, _, c in intervals)
        bounds = {b for intervals in self.nodes for lo, hi, _ in intervals for b in (lo, hi)}
        self.edges = sorted(bounds)
        # below[k][b]: node k's values below bound b, for each of its own bounds
        self.below: list[dict[int, int]] = []
        for intervals in self.nodes:
            known: dict[int, int] = {}
            total = 0
            for lo, hi, c in intervals:
                known.setdefault(lo, total)
                total += c
                known[hi] = total
            self.below.append(known)

    def _count_below_bound(self, k: int, e: int, *, upper: bool) -> int:
        """Node k's values below edge e, bounded from below (upper=False) or above (upper=True)."""
        known = self.below[k]
        bounds = sorted(known)
        if upper:
            pos = bisect.bisect_left(bounds, e)
            return known[bounds[pos]] if pos < len(bounds) else known[bounds[-1]]
        pos = bisect.bisect_right(bounds, e) - 1
        return known[bounds[pos]] if pos >= 0 else 0

    def _order_bounds(self, j: int) -> tuple[int, int]:
        """Return (low, high) grid bounds of the j-th smallest value (1-based)."""
        edges = self.edges
        low = edges[0]
        high = edges[-1]
        for i in range(len(edges) - 1):
            # at most this many values are <= any x in [edges[i], edges[i+1])
            upper = sum(
                self._count_below_bound(k, edges[i + 1], upper=True) for k in range(len(self.nodes))
            )
            if upper >= j:
                low = edges[i]
                break
        for i in range(len(edges)):
            lower = sum(
                self._count_below_bound(k, edges[i], upper=False) for k in range(len(self.nodes))
            )
            if lower >= j:
                high = edges[i]
                break
        return low, high

    def _cdf_inverse(self, rank: float) -> float:
        """Return x (grid units) where the piecewise-linear pooled CDF reaches rank."""
        edges = self.edges

        def cdf(x: float) -> float:
            total = 0.0
            for intervals in self.nodes:
                for lo, hi, c in intervals:
                    if x >= hi:
                        total += c
                    elif x > lo:
                        total += c * (x - lo) / (hi - lo)
            return total

        values = [cdf(e) for e in edges]
        pos = bisect.bisect_left(values, rank)
        if pos <= 0:
            return float(edges[0])
        if pos >= len(edges):
            return float(edges[-1])
        x0, x1, f0, f1 = edges[pos - 1], edges[pos], values[pos - 1], values[pos]
        if f1 <= f0:
            return float(x0)
        return x0 + (rank - f0) / (f1 - f0) * (x1 - x0)

    def quantile(self, q: float) -> tuple[float, float, float]:
        """Return (estimate, lower, upper) of the q-quantile in grid units."""
        n = self.n
        h = q * (n - 1)
        below = math.floor(h) + 1
        above = min(below + 1, n) if h > math.floor(h) else below
        low, _ = self._order_bounds(below)
        _, high = self._order_bounds(above)
        estimate = min(max(self._cdf_inverse(h + 0.5), float(low)), float(high))
        return estimate, float(low), float(high)
