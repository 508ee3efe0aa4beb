"""An adversary for released tables, independent of fedtre's suppression code.

Given what a researcher sees of a two-way (or one-way) table, the released cells and
totals taken as exact (rounding base 1, the worst case), it computes for every withheld
cell and total the smallest and largest value any table of non-negative integers
consistent with the release allows. A withheld value with equal bounds is recovered.

Method (not the one fedtre uses): feasibility of a table with some entries fixed is a
circulation with lower bounds (source -> row -> column -> sink -> source; a known
figure is an edge whose lower and upper bounds are equal), decided by a max-flow; the
feasible values of one entry form an interval, found by binary search. The network is
totally unimodular, so integer and real feasibility agree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

Label = str | None
Entry = tuple  # ("cell", r, c) | ("row", r) | ("col", c)


@dataclass
class Seen:
    """Figures of a released table (None: withheld)."""

    rows: list[Label]
    cols: list[Label]
    cells: dict[tuple[Label, Label], int | None]
    row_totals: dict[Label, int | None]
    col_totals: dict[Label, int | None]
    total: int | None


def seen_from_payload(
    payload: Mapping,
    *,
    two_way: bool,
    all_cells: Mapping[tuple[Label, Label], int] | None = None,
    zeros_known: Collection[tuple[Label, Label]] = (),
) -> Seen:
    """What a researcher sees in a crosstab node payload released with margins=true.

    A payload drops the levels beside which no non-zero figure is released, and says
    nothing about them. The adversary is granted more: given all_cells (the true table),
    the dropped levels come back under their true labels with every value unknown (the
    worst case, an adversary who knows which levels exist). A level with no records at
    all (an all-zero row or column of a made-up grid) does not exist in real data; it is
    left out. zeros_known: the zero cells the table released (zeros_disclosive false)
    that a dropped level hides; the adversary is granted them too (a zero the table
    withheld to protect another cell stays unknown: nothing else releases it).
    """
    cells = {(r, c): n for r, c, n in payload["cells"]}
    assert "hidden" not in payload  # no count of dropped levels leaves
    if all_cells is not None:
        rows_n: dict[Label, int] = {}
        cols_n: dict[Label, int] = {}
        for (r, c), n in all_cells.items():
            rows_n[r] = rows_n.get(r, 0) + n
            cols_n[c] = cols_n.get(c, 0) + n
        for (r, c), n in all_cells.items():
            if rows_n[r] > 0 and cols_n[c] > 0:
                cells.setdefault((r, c), 0 if (r, c) in zeros_known and n == 0 else None)
    rows = sorted({r for r, _ in cells}, key=str)
    cols = sorted({c for _, c in cells}, key=str)
    margins = payload.get("margins", {})
    if two_way:
        row_totals = {r: n for r, n in margins.get("rows", [])}
        col_totals = {c: n for c, n in margins.get("columns", [])}
    else:
        row_totals = {r: cells[(r, None)] for r in rows}  # a one-way cell is its row's total
        col_totals = {None: margins.get("total")}
    return Seen(rows, cols, cells, row_totals, col_totals, margins.get("total"))


def withheld_entries(seen: Seen) -> list[Entry]:
    found: list[Entry] = [("cell", r, c) for (r, c), n in seen.cells.items() if n is None]
    found += [("row", r) for r in seen.rows if seen.row_totals.get(r) is None]
    found += [("col", c) for c in seen.cols if seen.col_totals.get(c) is None]
    return found


def feasible(seen: Seen, fixed: Mapping[Entry, int]) -> bool:
    """Is there a table of non-negative integers consistent with seen plus `fixed`?"""
    assert seen.total is not None
    big = seen.total + 1
    edges: list[tuple[object, object, int, int]] = []  # (u, v, lower, upper)
    for r in seen.rows:
        known = seen.row_totals.get(r)
        value = fixed.get(("row", r), known)
        edges.append(("S", ("r", r), *((value, value) if value is not None else (0, big))))
    for c in seen.cols:
        known = seen.col_totals.get(c)
        value = fixed.get(("col", c), known)
        edges.append((("c", c), "T", *((value, value) if value is not None else (0, big))))
    for (r, c), n in seen.cells.items():
        value = fixed.get(("cell", r, c), n)
        bounds = (value, value) if value is not None else (0, big)
        edges.append((("r", r), ("c", c), *bounds))
    edges.append(("T", "S", seen.total, seen.total))
    return _circulation_feasible(edges)


def _circulation_feasible(edges: list[tuple[object, object, int, int]]) -> bool:
    excess: dict[object, int] = {}
    cap: dict[object, dict[object, int]] = {}

    def add(u: object, v: object, c: int) -> None:
        cap.setdefault(u, {}).setdefault(v, 0)
        cap.setdefault(v, {}).setdefault(u, 0)
        cap[u][v] += c

    for u, v, low, high in edges:
        if low > high or low < 0:
            return False
        add(u, v, high - low)
        excess[v] = excess.get(v, 0) + low
        excess[u] = excess.get(u, 0) - low
    need = 0
    for node, e in excess.items():
        if e > 0:
            add("SS", node, e)
            need += e
        elif e < 0:
            add(node, "TT", -e)
    return _max_flow(cap, "SS", "TT") == need


def _max_flow(cap: dict[object, dict[object, int]], s: object, t: object) -> int:
    flow = 0
    while True:
        parent: dict[object, object] = {s: s}
        queue = deque([s])
        while queue and t not in parent:
            u = queue.popleft()
            for v, c in cap.get(u, {}).items():
                if c > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if t not in parent:
            return flow
        push, v = None, t
        while v != s:
            u = parent[v]
            push = cap[u][v] if push is None else min(push, cap[u][v])
            v = u
        assert push is not None
        v = t
        while v != s:
            u = parent[v]
            cap[u][v] -= push
            cap[v][u] += push
            v = u
        flow += push


def bounds(seen: Seen, truth: Mapping[Entry, int]) -> dict[Entry, tuple[int, int]]:
    """Per withheld entry, the (min, max) consistent with the release; truth seeds the search."""
    assert seen.total is not None
    result = {}
    for entry in withheld_entries(seen):
        x = truth[entry]
        lo, hi = 0, x  # smallest feasible value in [0, x]
        while lo < hi:
            mid = (lo + hi) // 2
            if feasible(seen, {entry: mid}):
                hi = mid
            else:
                lo = mid + 1
        low = lo
        lo, hi = x, seen.total  # largest feasible value in [x, total]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if feasible(seen, {entry: mid}):
                lo = mid
            else:
                hi = mid - 1
        result[entry] = (low, lo)
    return result


def truth_entries(cells: Mapping[tuple[Label, Label], int], *, two_way: bool) -> dict[Entry, int]:
    """Every entry's true value: cells, row totals, column totals."""
    truth: dict[Entry, int] = {("cell", r, c): n for (r, c), n in cells.items()}
    for (r, c), n in cells.items():
        truth[("row", r)] = truth.get(("row", r), 0) + n
        truth[("col", c)] = truth.get(("col", c), 0) + n
    return truth


def recovered(seen: Seen, truth: Mapping[Entry, int]) -> list[Entry]:
    """Withheld entries whose value the release pins down exactly."""
    return [e for e, (lo, hi) in bounds(seen, truth).items() if lo == hi]


def small_derived_sums(seen: Seen, threshold: int) -> list[str]:
    """Rows or columns whose withheld cells' sum is derivable and between 0 and threshold."""
    found = []
    for r in seen.rows:
        hidden = [c for c in seen.cols if seen.cells[(r, c)] is None]
        known = seen.row_totals.get(r)
        if hidden and known is not None:
            s = known - sum(seen.cells[(r, c)] or 0 for c in seen.cols)
            if s < threshold:
                found.append(f"row {r}")
    for c in seen.cols:
        hidden = [r for r in seen.rows if seen.cells[(r, c)] is None]
        known = seen.col_totals.get(c)
        if hidden and known is not None:
            s = known - sum(seen.cells[(r, c)] or 0 for r in seen.rows)
            if s < threshold:
                found.append(f"column {c}")
    return found
