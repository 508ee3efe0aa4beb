"""The quantiles analysis: approximate pooled quantiles of a numeric column, each with a bracket.

Parameters: `column` (numeric, with a grid the TRE declares for it: DatasetSchema.grids),
`width` (the resolution: a whole multiple of that grid), optional `origin` (a grid point,
default 0), optional `probs` (default [0.25, 0.5, 0.75]; each strictly between 0 and 1),
optional `filter`. A column without a grid is refused: the TRE must declare one.

Method: a fine histogram every node shares. Each node counts its values per grid bin
[origin + i width, origin + (i+1) width) in its own SQL engine, with each bin's cell key
in the same GROUP BY (fedtre.disclosure.cellkey), then merges consecutive non-empty bins
on their TRUE counts into intervals of at least max(threshold, 1) records (and at least
n / 2000, so at most about 2000 intervals leave); a short last run joins the interval
before it. The key of a merged interval is the combination of its bins' keys, so it is
the key of exactly the records it counts. What leaves (fedtre.disclosure.release):

- the bounds between intervals, grid points only (release.bound), never a data value;
- the outer bounds are open: the first interval is "< e", the last ">= e" (null), so
  neither the minimum nor the maximum, nor the range rounded outward, is released;
- each interval's count and the node's n, through release.count with their cell keys
  (perturbed by the cell-key method under the default policy, or rounded).

A node with fewer than max(threshold, 1) values is BLOCKED.

The coordinator reads each node's released intervals as its distribution: for every bound
e it knows how many of the node's released counts lie below e. That brackets the pooled
empirical CDF of the released counts at every x, and so every order statistic:

    lower(q) <= the q-quantile (numpy's default, linear) of the released distribution <= upper(q)

The bracket is of the released counts. With rounding base 1 (and no perturbation) they are
the true counts and the bracket holds for the pooled values themselves. Under the cell-key
method each released interval count is within noise_deviation (D) of its true count, so
the rank of a value can be off by up to D times the number of intervals below it at each
node; in practice the quantile's interval moves by at most one neighbour, but the bracket
is not a guarantee for the true values then. A bracket side that reaches an open outer
interval is null (unbounded), and so is the estimate. The estimate spreads each closed
interval's records uniformly across it and inverts the pooled CDF at rank q (n - 1) + 1/2.
With threshold 0 the intervals are the grid bins, so the bracket runs from the bin of the
order statistic just below the quantile to the bin of the one just above; with a
threshold it widens to about the span of `threshold` records at each node around the
quantile. Quantiles are approximate by design: exact pooled quantiles would need values
no node may release.

- node payload (kinds declared in released_fields): {"column", "width", "origin" (the
  researcher's parameters), "n" (count), "intervals": [[low | null, high | null, count],
  ...]} (interval k covers [low, high); low and high are grid points; the first low and
  the last high are null: open).
- combined: {"column", "n" (sum of the nodes' released n), "probs", "quantiles":
             [[q, estimate, lower, upper], ...] (null where unbounded), "withheld_by",
             "nodes"}; all null when a node blocked its output.
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
from fedtre.analyses.pooling import as_count, as_float, as_rows, malformed, partition
from fedtre.disclosure import cellkey, differencing, distributions, release, rules
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"column": "bmi", "width": 0.5, "probs": [0.25, 0.5, 0.75]}'
DEFAULT_PROBS = (0.25, 0.5, 0.75)
MAX_PROBS = 99
# A node's distinct non-empty grid bins it will read; finer grids are refused.
MAX_GRID_BINS = 200_000
# About this many intervals at most leave a node.
MAX_INTERVALS = 2000
GRID_RULE = "grid"
Kind = release.Kind


def _number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class QuantilesAnalysis(Analysis):
    """Approximate quantiles of a numeric column, with a bracket around each."""

    name = "quantiles"
    list_params = frozenset({"probs"})
    description = "Approximate pooled quantiles from a shared fine histogram, with error brackets."
    released_fields = {
        "column": Kind.PARAMETER,
        "width": Kind.PARAMETER,
        "origin": Kind.PARAMETER,
        "n": Kind.COUNT,
        "intervals.*.0": Kind.BOUND,
        "intervals.*.1": Kind.BOUND,
        "intervals.*.2": Kind.COUNT,
    }

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
                "quantiles 'width' (the resolution, a multiple of the TRE's grid for the "
                f"column) must be a positive number and 'origin' a number, e.g. {_EXAMPLE}"
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

    def groupings(self, params: Mapping[str, Any]) -> list[differencing.Grouping]:
        """The grid bins: each released interval (a run of them) is remembered like a cohort,
        under "filter and lower <= x < upper"."""
        p = self.validate(params)
        return [(differencing.Bins(p["column"], float(p["origin"]), float(p["width"])),)]

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[differencing.Grouping, differencing.Labels]]:
        """The intervals whose count the payload releases, as runs of grid bins (an open
        outer interval: every bin below or above its bound); a single interval open at both
        ends is the cohort itself, remembered already."""
        p = self.validate(params)
        binning = differencing.Bins(p["column"], float(p["origin"]), float(p["width"]))

        def index(bound: Any) -> int | None:
            if bound is None:
                return None
            return round((float(bound) - binning.origin) / binning.width)

        return differencing.released_spans(
            binning,
            (
                (index(low), index(high))
                for low, high, n in payload.get("intervals", [])
                if n is not None
            ),
        )

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        problems = column_problems(
            p["column"], role="quantiles", schema=schema, allowed=NUMERIC_TYPES
        ) + schema_filter_problems(p["filter"], schema)
        if problems:
            return problems
        return distributions.grid_problems(
            p["column"],
            p["width"],
            p["origin"],
            schema.grids,
            analysis=self.name,
            dataset=schema.name,
        )

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table = source.table
        value = sa.cast(table.c[p["column"]], sa.Double)
        conditions = complete_cases(table, [p["column"]], p["filter"])
        # A value within GRID_TOLERANCE widths below a grid point counts as on it.
        steps = (value - p["origin"]) / p["width"] + distributions.GRID_TOLERANCE
        index = sa.func.floor(steps).label("bin")
        key = cellkey.cell_key_sum(cellkey.record_key_of(source))
        query = (
            sa.select(index, sa.func.count(), key)
            .where(*conditions)
            .group_by(index)
            .order_by(index)
        )
        bins: list[list[int]] = []
        with source.engine.connect() as conn:
            for i, n, k in conn.execution_options(yield_per=10_000).execute(query):
                if bins and bins[-1][0] == int(i):
                    bins[-1][1] += int(n)
                    bins[-1][2] = cellkey.combine_keys([bins[-1][2], int(k or 0)])
                else:
                    bins.append([int(i), int(n), int(k or 0)])
                if len(bins) > MAX_GRID_BINS:
                    raise InvalidRequest(
                        "the grid is too fine for this node's data (more than "
                        f"{MAX_GRID_BINS} non-empty bins); use a wider width"
                    )
        return {"bins": bins}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Merge grid bins into intervals of at least max(threshold, 1) records each (true
        counts), then release bounds on the grid, open outer bounds and perturbed counts."""
        p = self.validate(params)
        bins = [(int(i), int(n), int(k)) for i, n, k in raw["bins"]]
        n = sum(c for _, c, _ in bins)
        t = policy.threshold
        need = max(t, 1, math.ceil(n / MAX_INTERVALS))
        grid_rule = RuleResult(
            GRID_RULE, True, "interval bounds are grid points; the outer bounds are open"
        )
        if n < max(t, 1):
            rule = RuleResult(
                rules.THRESHOLD, False, f"fewer than {max(t, 1)} values, so nothing is released"
            )
            return NodeOutput(Outcome.BLOCKED, {}, (rule, distributions.EXTREMES_RULE))
        intervals = merge_bins(bins, need)
        released = _release_intervals(intervals, policy)
        n_released = release.count(n, cellkey.combine_keys(k for _, _, k in bins), policy)
        if released is None or n_released is None:
            # Only a TRE's own perturbation table can push a count below the threshold.
            rule = RuleResult(
                rules.THRESHOLD, False, "a count fell below the threshold after perturbation"
            )
            return NodeOutput(Outcome.BLOCKED, {}, (rule, distributions.EXTREMES_RULE))
        width, origin = p["width"], p["origin"]

        def edge(i: int, outer: bool) -> float | None:
            return None if outer else release.bound(origin + i * width, width, origin)

        last = len(released) - 1
        rows = [
            [edge(lo, k == 0), edge(hi, k == last), count]
            for k, (lo, hi, count) in enumerate(released)
        ]
        detail = f"values are released as counts in {len(rows)} grid-aligned intervals"
        if len(intervals) < len(bins):
            detail += f" (merged from {len(bins)} non-empty bins so each holds at least {need})"
        checked = (
            RuleResult(rules.THRESHOLD, True, f"every interval has at least {need} records"),
            rules.count_rule(policy),
            RuleResult(rules.QUANTILE, True, detail),
            grid_rule,
            distributions.EXTREMES_RULE,
        )
        payload = {
            "column": p["column"],
            "width": width,
            "origin": origin,
            "n": n_released,
            "intervals": rows,
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
        width, origin = p["width"], p["origin"]
        nodes: list[list[tuple[float, float, int]]] = []
        total = 0
        for node, payload in part.included.items():
            n = as_count(payload.get("n"), node, "n")
            total += n or 0
            rows = as_rows(payload, "intervals", 3, node)
            intervals = []
            for k, (lo, hi, c) in enumerate(rows):
                low = as_float(lo, node, "an interval's lower bound")
                high = as_float(hi, node, "an interval's upper bound")
                if (low is None) != (k == 0) or (high is None) != (k == len(rows) - 1):
                    raise malformed(node, "only the outer bounds may be open")
                a = -math.inf if low is None else round((low - origin) / width)
                b = math.inf if high is None else round((high - origin) / width)
                if b <= a:
                    raise malformed(node, "an interval's bounds are not increasing")
                count = as_count(c, node, "an interval count")
                intervals.append((float(a), float(b), count or 0))
            nodes.append(sorted(intervals))
        brackets = QuantileBrackets(nodes)

        def at(i: float | None) -> float | None:
            return None if i is None or not math.isfinite(i) else origin + i * width

        quantiles = []
        for q in p["probs"]:
            estimate, lower, upper = brackets.quantile(q)
            quantiles.append([q, at(estimate), at(lower), at(upper)])
        return {
            **base,
            "n": total,
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


def merge_bins(bins: Sequence[tuple[int, int, int]], need: int) -> list[tuple[int, int, int, int]]:
    """Merge consecutive non-empty grid bins (index, true count, cell key) into intervals.

    Returns (first index, last index + 1, count, cell key) per interval, each holding at
    least `need` records (a short last run joins the interval before it); the key of an
    interval combines its bins' keys.
    """
    intervals: list[tuple[int, int, int, int]] = []
    start: int | None = None
    count = 0
    keys: list[int] = []
    for i, n, k in bins:
        if start is None:
            start = i
        count += n
        keys.append(k)
        if count >= need:
            intervals.append((start, i + 1, count, cellkey.combine_keys(keys)))
            start, count, keys = None, 0, []
    if start is not None:
        last = bins[-1][0] + 1
        if intervals:
            lo, _, c, k = intervals.pop()
            intervals.append((lo, last, c + count, cellkey.combine_keys([k, *keys])))
        else:
            intervals.append((start, last, count, cellkey.combine_keys(keys)))
    return intervals


def _release_intervals(
    intervals: Sequence[tuple[int, int, int, int]], policy: DisclosurePolicy
) -> list[tuple[int, int, int]] | None:
    """Return (low, high, released count) per interval; an interval whose count the
    release stage withholds (only a TRE's own table can) joins its neighbour; None when
    nothing can be released."""
    work = list(intervals)
    while work:
        out: list[tuple[int, int, int]] = []
        for k, (lo, hi, c, key) in enumerate(work):
            value = release.count(c, key, policy)
            if value is None:
                j = k + 1 if k + 1 < len(work) else k - 1
                if j < 0:
                    return None
                a, b = sorted((k, j))
                merged = (
                    work[a][0],
                    work[b][1],
                    work[a][2] + work[b][2],
                    cellkey.combine_keys([work[a][3], work[b][3]]),
                )
                work[a : b + 1] = [merged]
                break
            out.append((lo, hi, value))
        else:
            return out
    return None


class QuantileBrackets:
    """The pooled empirical CDF of the released counts, known at each node's interval bounds.

    Bounds are in grid units; a node's first interval starts at -inf and its last ends at
    +inf (the open outer intervals).
    """

    def __init__(self, nodes: Sequence[Sequence[tuple[float, float, int]]]) -> None:
        self.nodes = [list(intervals) for intervals in nodes]
        self.n = sum(c for intervals in self.nodes for _, _, c in intervals)
        bounds = {b for intervals in self.nodes for lo, hi, _ in intervals for b in (lo, hi)}
        self.edges = sorted(bounds)
        # below[k][b]: node k's values below bound b, for each of its own bounds
        self.below: list[dict[float, int]] = []
        for intervals in self.nodes:
            known: dict[float, int] = {}
            total = 0
            for lo, hi, c in intervals:
                known.setdefault(lo, total)
                total += c
                known[hi] = total
            self.below.append(known)

    def _count_below_bound(self, k: int, e: float, *, upper: bool) -> int:
        """Node k's values below edge e, bounded from below (upper=False) or above (upper=True)."""
        known = self.below[k]
        bounds = sorted(known)
        if upper:
            pos = bisect.bisect_left(bounds, e)
            return known[bounds[pos]] if pos < len(bounds) else known[bounds[-1]]
        pos = bisect.bisect_right(bounds, e) - 1
        return known[bounds[pos]] if pos >= 0 else 0

    def _order_bounds(self, j: int) -> tuple[float, float]:
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

    def _cdf(self, x: float) -> float:
        """The pooled CDF at x: closed intervals spread uniformly, an open one's records
        at its finite bound."""
        total = 0.0
        for intervals in self.nodes:
            for lo, hi, c in intervals:
                if x >= hi:
                    total += c
                elif x <= lo or lo == -math.inf:
                    continue
                elif hi == math.inf:
                    total += c
                else:
                    total += c * (x - lo) / (hi - lo)
        return total

    def _cdf_inverse(self, rank: float) -> float:
        """Return x (grid units) where the piecewise-linear pooled CDF reaches rank."""
        edges = [e for e in self.edges if math.isfinite(e)]
        values = [self._cdf(e) for e in edges]
        pos = bisect.bisect_left(values, rank)
        if pos <= 0:
            return float(edges[0])
        if pos >= len(edges):
            return float(edges[-1])
        x0, x1, f0, f1 = edges[pos - 1], edges[pos], values[pos - 1], values[pos]
        if f1 <= f0:
            return float(x0)
        return x0 + (rank - f0) / (f1 - f0) * (x1 - x0)

    def quantile(self, q: float) -> tuple[float | None, float, float]:
        """Return (estimate, lower, upper) of the q-quantile in grid units; a side in an
        open outer interval is infinite, and the estimate is then None."""
        n = self.n
        h = q * (n - 1)
        below = math.floor(h) + 1
        above = min(below + 1, n) if h > math.floor(h) else below
        low, _ = self._order_bounds(below)
        _, high = self._order_bounds(above)
        if not (math.isfinite(low) and math.isfinite(high)):
            return None, float(low), float(high)
        estimate = min(max(self._cdf_inverse(h + 0.5), float(low)), float(high))
        return estimate, float(low), float(high)
