"""The histogram analysis: counts of a numeric column in bins on the TRE's grid.

Parameters: `column` (numeric, with a grid declared by the TRE: DatasetSchema.grids),
optional `filter`, and the bins, either
- `edges`: fixed, strictly increasing bin edges (2 to 1001 numbers, each a multiple of
  the column's grid); bins are [e0, e1), ..., [e(k-1), ek] (the last closed), as
  numpy.histogram; values outside [e0, ek] are not counted; or
- `width` (a whole multiple of the grid) and optional `origin` (a multiple of the grid,
  default 0): bins [origin + i width, origin + (i+1) width) for every integer i.
A column without a grid is a schema problem: the TRE must declare one before any bin
edge of it can be released.

Each node counts in its own SQL engine (GROUP BY a CASE over the edges, or FLOOR((x -
origin) / width)), with each bin's cell key in the same query; no value reaches Python.

What a node releases (fedtre.disclosure.distributions, fedtre.disclosure.tables):
- Open ends. The bins below the first edge with at least `threshold` records below it
  merge into one lower bin open at the bottom, and those at or above the last edge with
  at least `threshold` records at or above it into one upper bin open at the top. So
  no minimum or maximum, and no bin in a sparse tail, is ever released or named; the
  open bins' outer edges are not released at all (null). With `edges`, the open bins
  still stop at e0 and ek (values outside are not counted). If no edge has `threshold`
  records on each side, one bin open at both ends holds every counted record.
- Inner bins. The open bins and every grid bin between them form a one-way table
  checked with its total: a bin with 1 to threshold - 1 records is withheld, and
  secondary suppression withholds more so none can be recovered from the total.
  Released counts are perturbed by the cell-key method (or rounded).
- Zeros never locate a withheld bin. An empty inner bin is released as 0 only when no
  non-empty bin is withheld; otherwise every empty inner bin is shown null, exactly
  like the withheld ones, so a null bin means "empty or withheld" and never says
  "someone has a value here" (secondary suppression then treats those zeros as
  withheld: the null bins together hold 0 or at least `threshold` records, never a
  recoverable count). Bins are listed with their edges only, in order, contiguous; no
  bin index is released.
- Differencing memory. Each released bin is remembered like a table cell (groupings,
  released_groups): inner bins, and each open bin as the union of the grid bins in it,
  under the question "filter and lower <= x < upper"; a bin of another histogram (or a
  cohort or group) holding nearly the same records is refused, so overlapping
  histograms cannot isolate a withheld bin's records (fedtre.disclosure.differencing).

- node payload: {"column", "bins": [[lower | null, upper | null, n | null], ...]}
  lower/upper: grid points (the first bin's lower and the last bin's upper are null:
  open); n: the released count, null when withheld (or an empty bin shown as withheld).
- combined: {"column", "bins": [[lower | null, upper | null, n | null], ...],
             "withheld": [[lower | null, upper | null, [node, ...]], ...], "nodes": {...}}
  The combined bins are bounded by the edges every included node released (the open
  ends are as wide as the widest node's), so every node's bin lies inside one combined
  bin and the combined count is the sum of the node bins inside it. A combined bin is
  null when a node's bin inside it is null (a BLOCKED node withholds every bin);
  "withheld" names those nodes. REFUSED and FAILED nodes are left out.
"""

from __future__ import annotations

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
from fedtre.analyses.pooling import as_count, as_float, as_rows, malformed, partition
from fedtre.disclosure import cellkey, differencing, distributions, release, tables
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"column": "age", "edges": [18, 30, 45, 60, 75, 100]} or {"column": "age", "width": 10}'
MAX_BINS = 1000
# A bin as released: (lower edge index | None, upper edge index | None, n | None).
_Bin = tuple[int | None, int | None, int | None]
# A bin before release: (lower edge index | None, upper edge index | None, n, cell key).
_Span = tuple[int | None, int | None, int, int]


def _number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class HistogramAnalysis(Analysis):
    """Counts of a numeric column in fixed bins, or in bins of a shared width."""

    name = "histogram"
    list_params = frozenset({"edges"})
    description = "Counts of a numeric column in fixed bin edges or bins of an agreed width."
    released_fields = {
        "column": release.Kind.PARAMETER,
        "bins.*.0": release.Kind.BOUND,
        "bins.*.1": release.Kind.BOUND,
        "bins.*.2": release.Kind.COUNT,
    }

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

    # The base class's annotations name columns only; a histogram's groups are its bins.
    def groupings(self, params: Mapping[str, Any]) -> list[differencing.Grouping]:
        """The bins, each remembered like a cohort under "filter and lower <= x < upper"."""
        return [(_binning(self.validate(params)),)]

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[differencing.Grouping, differencing.Labels]]:
        """The bins whose count the payload releases: every inner bin, and each open
        outer bin as the union of the grid bins in it (with edges, down to e0 or up to
        ek); a single bin open at both ends (the whole cohort, or with edges its records
        within [e0, ek]) is not named, as the cohort itself is remembered."""
        p = self.validate(params)
        binning = _binning(p)
        return differencing.released_spans(
            binning,
            (
                (
                    None if lower is None else _edge_index(p, float(lower), "(payload)"),
                    None if upper is None else _edge_index(p, float(upper), "(payload)"),
                )
                for lower, upper, n in payload.get("bins", [])
                if n is not None
            ),
        )

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        problems = column_problems(
            p["column"], role="histogram", schema=schema, allowed=NUMERIC_TYPES
        )
        if not problems:
            problems += distributions.histogram_grid_problems(
                p["column"],
                schema,
                width=p.get("width"),
                origin=p.get("origin"),
                edges=p.get("edges"),
            )
        return problems + schema_filter_problems(p["filter"], schema)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        """Return {"grid": the column's grid, "bins": [[bin index, n, cell key], ...]}: the
        non-empty bins, by index."""
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        conditions = complete_cases(source.table, [p["column"]], p["filter"])
        index = _binning(p).index_sql(source.table)
        labelled = index.label("bin")
        key = cellkey.cell_key_sum(cellkey.record_key_of(source))
        query = sa.select(labelled, sa.func.count(), key).where(*conditions).group_by(labelled)
        found: dict[int, tuple[int, int]] = {}
        with source.engine.connect() as conn:
            for i, n, k in conn.execute(query):
                if i is not None and n:
                    m, kk = found.get(int(i), (0, 0))
                    found[int(i)] = (m + int(n), cellkey.combine_keys([kk, int(k or 0)]))
        grid = float(source.schema.grids[p["column"]])
        return {"grid": grid, "bins": [[i, *found[i]] for i in sorted(found)]}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Open ends, then the inner bins as a one-way table with its total (module docstring)."""
        p = self.validate(params)
        found = {int(i): (int(n), int(k)) for i, n, k in raw["bins"] if int(n) > 0}
        ordered = sorted(found)
        rules_: tuple[Any, ...]
        split = distributions.open_bins([(i, found[i][0]) for i in ordered], policy.threshold)
        # Bins as (lower edge index, upper edge index, n, key); edge j is bin j's lower edge.
        spans: list[_Span]
        if split is None:
            n = sum(v[0] for v in found.values())
            key = cellkey.combine_keys(v[1] for v in found.values())
            spans = [(None, None, n, key)]
        else:
            low, high = split

            def merged(indices: list[int]) -> tuple[int, int]:
                return (
                    sum(found[i][0] for i in indices),
                    cellkey.combine_keys(found[i][1] for i in indices),
                )

            if high - low - 1 > MAX_BINS:
                raise InvalidRequest(
                    f"these bins are too narrow: more than {MAX_BINS} of them would be needed; "
                    "use a wider width"
                )
            spans = [(None, low + 1, *merged([i for i in ordered if i <= low]))]
            spans += [(i, i + 1, *found.get(i, (0, 0))) for i in range(low + 1, high)]
            spans += [(high, None, *merged([i for i in ordered if i >= high]))]
        protected = _protect(spans, policy)
        rules_ = (*protected.rules, distributions.EXTREMES_RULE, distributions.GRID_RULE)
        if protected.outcome is Outcome.BLOCKED or not found:
            return NodeOutput(Outcome.BLOCKED, {}, rules_)
        grid = float(raw["grid"])
        bins = [
            [
                None if lo is None else release.bound(_edge_value(p, lo), grid),
                None if hi is None else release.bound(_edge_value(p, hi), grid),
                protected.cells[(str(pos), None)],
            ]
            for pos, (lo, hi, _, _) in enumerate(spans)
        ]
        return NodeOutput(protected.outcome, {"column": p["column"], "bins": bins}, rules_)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        by_node = {node: _node_bins(p, node, payload) for node, payload in part.included.items()}
        # The edges every node released bound the combined bins.
        common: set[int] | None = None
        for bins in by_node.values():
            inner = {hi for _, hi, _ in bins if hi is not None}
            common = inner if common is None else common & inner
        cuts: list[int | None] = [None, *sorted(common or ()), None]
        spans = list(zip(cuts, cuts[1:], strict=False)) if by_node else []
        combined: list[list[Any]] = []
        withheld: list[list[Any]] = []
        for lo, hi in spans:
            total = 0
            missing = list(part.blocked)
            for node, bins in by_node.items():
                for blo, bhi, n in bins:
                    inside = (lo is None or (blo is not None and blo >= lo)) and (
                        hi is None or (bhi is not None and bhi <= hi)
                    )
                    if not inside:
                        continue
                    if n is None:
                        if node not in missing:
                            missing.append(node)
                    else:
                        total += n
            edges = [None if e is None else _edge_value(p, e) for e in (lo, hi)]
            combined.append([*edges, None if missing else total])
            if missing:
                withheld.append([*edges, sorted(missing)])
        return {
            "column": p["column"],
            "bins": combined,
            "withheld": withheld,
            "nodes": part.nodes,
        }

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return one row per bin: index the bins as intervals (closed left; the open ends
        run from -inf and to +inf), column n (Int64, <NA> when withheld)."""
        import numpy as np
        import pandas as pd

        p = self.validate(params)
        rows = as_rows(payload, "bins", 3, "(payload)")
        if not rows:
            return pd.DataFrame({"n": pd.array([], dtype="Int64")})
        breaks = [-math.inf if rows[0][0] is None else float(rows[0][0])]
        breaks += [math.inf if hi is None else float(hi) for _, hi, _ in rows]
        index = pd.IntervalIndex.from_breaks(breaks, closed="left", name=p["column"])
        values = [np.nan if n is None else float(n) for _, _, n in rows]
        return pd.DataFrame({"n": values}, index=index).astype({"n": "Int64"})


def _protect(spans: list[_Span], policy: DisclosurePolicy) -> tables.ProtectedTable:
    """Check the bins as a one-way table with its total.

    Empty bins are released as 0 only when no non-empty bin is withheld; otherwise they
    are withheld too, so a null bin never says "someone has a value here".
    """
    import dataclasses

    cells: dict[tables.Cell, tuple[int, int]] = {
        (str(pos), None): (n, key) for pos, (_, _, n, key) in enumerate(spans)
    }
    shown = tables.protect_table(
        cells, dataclasses.replace(policy, zeros_disclosive=False), two_way=False
    )
    if shown.outcome is Outcome.RELEASED:
        return shown
    return tables.protect_table(
        cells, dataclasses.replace(policy, zeros_disclosive=True), two_way=False
    )


def _binning(p: Mapping[str, Any]) -> differencing.Binning:
    """Return the bins of validated params as the differencing memory names them; its
    index_sql is the bin index compute counts by."""
    if "edges" in p:
        return differencing.Edges(p["column"], tuple(float(e) for e in p["edges"]))
    return differencing.Bins(p["column"], float(p["origin"]), float(p["width"]))


def _edge_index(p: Mapping[str, Any], value: float, node: str) -> int:
    """Return the grid index of a released edge (its position in edges, or its step)."""
    if "edges" in p:
        for j, e in enumerate(p["edges"]):
            if math.isclose(e, value, rel_tol=1e-12, abs_tol=1e-12):
                return j
        raise malformed(node, "a bin edge is not one of the edges")
    steps = (value - p["origin"]) / p["width"]
    if abs(steps - round(steps)) > 1e-6:
        raise malformed(node, "a bin edge is not on the grid")
    return round(steps)


def _edge_value(p: Mapping[str, Any], j: int) -> float:
    return float(p["edges"][j]) if "edges" in p else p["origin"] + j * p["width"]


def _node_bins(p: Mapping[str, Any], node: str, payload: Mapping[str, Any]) -> list[_Bin]:
    """Return a node's bins as edge indices, checked to be contiguous with open ends."""
    bins: list[_Bin] = []
    for lo, hi, n in as_rows(payload, "bins", 3, node):
        edges = []
        for e in (lo, hi):
            value = as_float(e, node, "a bin edge")
            edges.append(None if value is None else _edge_index(p, value, node))
        bins.append((edges[0], edges[1], as_count(n, node, "a bin count")))
    if not bins:
        raise malformed(node, "it released no bins")
    if bins[0][0] is not None or bins[-1][1] is not None:
        raise malformed(node, "its outermost bins are not open")
    for (_, hi, _), (lo, _, _) in zip(bins, bins[1:], strict=False):
        if hi is None or lo is None or hi != lo:
            raise malformed(node, "its bins are not contiguous")
    return bins
