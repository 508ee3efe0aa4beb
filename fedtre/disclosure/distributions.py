"""Rules for distributions: quantiles, histogram bins and their edges, minimum and maximum.

- Minimum and maximum are never released as such: each is one record's value.
- Quantiles are read from intervals of at least `threshold` records on the grid
  (fedtre.analyses.quantiles), never from a record's value.
- A histogram's edges are points of the grid the TRE declared for the column
  (DatasetSchema.grids; histogram_grid_problems): a researcher's width is a whole multiple of it
  and every edge (or the origin) a multiple of it. A column without a grid has no
  released bounds. The outermost bins are open (open_bins): all values below the first
  edge at which at least `threshold` records lie below, and all at or above the last
  edge with at least `threshold` records at or above, merge into two open-ended bins,
  so the data's extent (a minimum, a maximum, a lone value in a tail) is never pinned
  and no outer bin is named. Bins between them are a one-way table checked against its
  total (fedtre.disclosure.tables); see fedtre.analyses.histogram for how zero bins
  are shown so that a withheld bin is never located.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedtre.analyses.base import DatasetSchema, RuleResult
from fedtre.analyses.expressions import is_expression
from fedtre.disclosure.rules import EXTREMES

EXTREMES_RULE = RuleResult(EXTREMES, True, "the minimum and maximum are never released")
GRID = "grid"
GRID_RULE = RuleResult(
    GRID, True, "bin edges are points of the TRE's grid; the outermost bins are open-ended"
)


# -- grids (quantiles, survival times) -------------------------------------------------

# A value within this many grid widths of a grid point counts as on it (float error in
# data such as months stored as k / 12).
GRID_TOLERANCE = 1e-9


def grid_problems(
    column: str,
    width: float | None,
    origin: float,
    grids: Mapping[str, float],
    *,
    analysis: str,
    dataset: str,
) -> list[str]:
    """Return why `width` and `origin` cannot be used on column's grid ([] when they can).

    The TRE declares each column's finest grid (DatasetSchema.grids); released bounds are
    points of it, so a width must be a whole multiple of the grid and the origin a grid
    point. width None means the grid itself.
    """
    grid = grids.get(column)
    if grid is None and is_expression(column):
        # A derived numeric's bounds would be its records' values: grids are declared
        # columns' only (fedtre.analyses.derived).
        return [
            f"{analysis} releases bounds on a grid the TRE declares for a column, and a "
            f"derived variable ({column}) has none; ask for {analysis} of a declared column "
            "with a grid, or for a summary of the derived variable"
        ]
    if grid is None or not grid > 0:
        return [
            f"{analysis} releases bounds of {column!r} on a grid the TRE declares, and this "
            f"node declares none for it: the TRE must add it to the dataset's config, e.g. "
            f"[datasets.{dataset}] grids = {{ {column} = 5 }}"
        ]
    problems = []
    if width is not None and not _multiple(width, grid):
        problems.append(
            f"{analysis} 'width' must be a whole multiple of the TRE's grid for {column!r} "
            f"({grid:g}), e.g. {grid:g} or {2 * grid:g}"
        )
    if not _multiple(origin, grid, positive=False):
        problems.append(
            f"{analysis} 'origin' must be a multiple of the TRE's grid for {column!r} ({grid:g})"
        )
    return problems


def _multiple(value: float, grid: float, *, positive: bool = True) -> bool:
    steps = value / grid
    whole = round(steps)
    if positive and whole < 1:
        return False
    return abs(steps - whole) <= GRID_TOLERANCE * max(1.0, abs(steps))


# -- histogram grids and open bins ------------------------------------------------------


def histogram_grid_problems(
    column: str,
    schema: DatasetSchema,
    *,
    width: float | None = None,
    origin: float | None = None,
    edges: Sequence[float] | None = None,
) -> list[str]:
    """Return why a histogram's bins (a width and origin, or edges) are not on column's grid."""
    if edges is None:
        return grid_problems(
            column,
            width,
            0.0 if origin is None else origin,
            schema.grids,
            analysis="histogram",
            dataset=schema.name,
        )
    problems = grid_problems(
        column, None, 0.0, schema.grids, analysis="histogram", dataset=schema.name
    )
    if problems:
        return problems
    grid = schema.grids[column]
    off = [e for e in edges if not _multiple(e, grid, positive=False)]
    if off:
        shown = ", ".join(f"{e:g}" for e in off[:5])
        problems.append(
            f"histogram 'edges' must be multiples of the TRE's grid for {column!r} ({grid:g}); "
            f"{shown} {'is' if len(off) == 1 else 'are'} not"
        )
    return problems


def open_bins(counts: Sequence[tuple[int, int]], threshold: int) -> tuple[int, int] | None:
    """Return (low, high): the bins merged into the open ends, or None if there is no split.

    counts: (bin index, count) of the non-empty bins, by index. Bins at or below `low`
    form the lower open bin, at or above `high` the upper one; each holds at least
    max(threshold, 1) records and low < high. None when no edge has that many records on
    each side (then only the whole count could be released).
    """
    t = max(threshold, 1)
    low = high = None
    cum = 0
    for i, n in counts:
        cum += n
        if cum >= t:
            low = i
            break
    cum = 0
    for i, n in reversed(counts):
        cum += n
        if cum >= t:
            high = i
            break
    if low is None or high is None or high <= low:
        return None
    return low, high
