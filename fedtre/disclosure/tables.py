"""Frequency tables: primary suppression, zero cells, and secondary suppression against the totals.

The model. A one- or two-way table is checked together with its totals (row totals,
column totals and the grand total), whether or not the output prints them: the
researcher can ask for the totals of the same cohort separately, so they are assumed
known unless withheld here. Every entry, cells and totals alike, is a flow on an arc
of a small circulation network, and each total is a balance at a node:

    two-way:  source -> row r (row total) -> column c (cell r,c) -> sink (column total),
              sink -> source (grand total)
    one-way:  source -> sink (one arc per cell), sink -> source (grand total)

Primary suppression withholds every entry with 0 < n < threshold, and zero cells when
zeros are disclosive. Secondary suppression then withholds more entries until both
hold, checked exactly:

1. Nothing withheld can be recovered. Released entries are known exactly (rounding is
   ignored, the worst case) and withheld ones are unknowns >= 0. A withheld entry is
   determined only if no other table consistent with the released figures gives it a
   different value; it can be moved iff its arc lies on a cycle of the residual network
   of withheld entries (an arc can always grow, and shrink while its value is > 0). The
   network matrix is totally unimodular, so a real movement implies an integer one.
   The audit checks this for every withheld entry; no heuristic is trusted on its own.
2. No small total can be derived. At every balance (a row with its total, a column with
   its total, the totals with the grand total) whose withheld entries all sit on one
   side, their sum is derivable; it must be at least the threshold.

Method (deterministic): while a balance breaks rule 2 or holds exactly one withheld
entry, withhold the smallest released non-zero entry at that balance (cells before
totals); then audit rule 1 and, for the first recoverable entry, withhold the smallest
released non-zero entry at either end of its arc. Each step withholds one more entry,
so this ends; if nothing is left to withhold while a rule still fails, the whole table
is blocked.

Suppression decides on the TRUE counts (the worst case: an attacker who knew every
released figure exactly). Only then does each released entry leave through the release
stage (fedtre.disclosure.release.count): perturbed by the cell-key method with the
entry's cell key (a margin's key is fedtre.disclosure.cellkey.combine_keys of its
cells' keys, the key its records would give), or rounded if the TRE chose rounding. An
entry whose perturbed value the TRE's table would put below the threshold (a custom
ptable) is withheld like a small one, before secondary suppression, so the pattern of
withheld entries is always protected.

Released figures from other outputs (counts of sub-cohorts) can still be combined with
a table; the noise and the differencing rule (fedtre.disclosure.differencing) address
that; see docs/disclosure.md.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from fedtre.analyses.base import Outcome, RuleResult
from fedtre.disclosure import cellkey, release
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import (
    SECONDARY,
    THRESHOLD,
    ZERO_CELLS,
    count_rule,
    outcome_for,
)

Label = str | None
Cell = tuple[Label, Label]
# Entry keys: ("cell", row, col), ("row", row), ("col", col), ("total",)
Entry = tuple[Hashable, ...]
TOTAL: Entry = ("total",)

PRIMARY = "threshold"
ZERO = "zero"
SECOND = "secondary"


@dataclass(frozen=True)
class _Arc:
    entry: Entry
    tail: Hashable
    head: Hashable
    value: int


@dataclass(frozen=True)
class ProtectedTable:
    """A table after suppression and the release stage; None marks a withheld value.

    Released values are counts made by fedtre.disclosure.release.count (perturbed or
    rounded).

    why maps each withheld entry to "threshold", "zero" or "secondary".
    """

    cells: dict[Cell, int | None]
    row_totals: dict[Label, int | None]
    column_totals: dict[Label, int | None]
    total: int | None
    outcome: Outcome
    rules: tuple[RuleResult, ...]
    why: dict[Entry, str]


def table_network(cells: Mapping[Cell, int], *, two_way: bool) -> list[_Arc]:
    """Return the entries of a table and its totals as arcs of a circulation network."""
    arcs: list[_Arc] = []
    total = sum(cells.values())
    arcs.append(_Arc(TOTAL, "sink", "source", total))
    if not two_way:
        for (r, c), n in cells.items():
            arcs.append(_Arc(("cell", r, c), "source", "sink", n))
        return arcs
    rows: dict[Label, int] = {}
    cols: dict[Label, int] = {}
    for (r, c), n in cells.items():
        rows[r] = rows.get(r, 0) + n
        cols[c] = cols.get(c, 0) + n
        arcs.append(_Arc(("cell", r, c), ("r", r), ("c", c), n))
    for r, n in rows.items():
        arcs.append(_Arc(("row", r), "source", ("r", r), n))
    for c, n in cols.items():
        arcs.append(_Arc(("col", c), ("c", c), "sink", n))
    return arcs


def recoverable(arcs: Sequence[_Arc], withheld: Iterable[Entry]) -> list[Entry]:
    """Return the withheld entries whose value the released entries determine exactly."""
    hidden = set(withheld)
    free = [a for a in arcs if a.entry in hidden]
    found = []
    for arc in free:
        others = [a for a in free if a is not arc]
        can_grow = _reachable(others, arc.head, arc.tail)
        can_shrink = arc.value > 0 and _reachable(others, arc.tail, arc.head)
        if not (can_grow or can_shrink):
            found.append(arc.entry)
    return found


def _reachable(arcs: Sequence[_Arc], start: Hashable, goal: Hashable) -> bool:
    """Is goal reachable from start in the residual network of `arcs` (all free)?"""
    graph: dict[Hashable, list[Hashable]] = {}
    for a in arcs:
        graph.setdefault(a.tail, []).append(a.head)  # every free entry can grow
        if a.value > 0:
            graph.setdefault(a.head, []).append(a.tail)  # and shrink while above zero
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            return True
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return False


def small_derivable_sums(
    arcs: Sequence[_Arc], withheld: Iterable[Entry], threshold: int
) -> list[Hashable]:
    """Return each balance whose withheld entries sit on one side and sum to < threshold.

    A balance holding a single withheld entry is listed too (its value is derivable).
    """
    hidden = set(withheld)
    sides: dict[Hashable, tuple[list[int], list[int]]] = {}
    for a in arcs:
        if a.entry in hidden:
            sides.setdefault(a.tail, ([], []))[0].append(a.value)
            sides.setdefault(a.head, ([], []))[1].append(a.value)
    bad = []
    for node, (out, into) in sides.items():
        if out and into:
            continue
        values = out or into
        if len(values) == 1 or sum(values) < threshold:
            bad.append(node)
    return bad


def suppress(
    arcs: Sequence[_Arc], primary: Mapping[Entry, str], threshold: int
) -> tuple[dict[Entry, str], bool]:
    """Return the withheld entries (with why) after secondary suppression, and success.

    Success is False when no further entry could be withheld while a rule still failed;
    the caller then withholds the whole table.
    """
    withheld = dict(primary)
    by_node: dict[Hashable, list[_Arc]] = {}
    for a in arcs:
        by_node.setdefault(a.tail, []).append(a)
        by_node.setdefault(a.head, []).append(a)
    if not withheld:
        return withheld, True
    while True:
        bad_nodes = small_derivable_sums(arcs, withheld, threshold)
        if bad_nodes:
            node = bad_nodes[0]
            pick = _next_to_withhold(by_node[node], withheld, by_node, node)
            if pick is None:
                return withheld, False
            withheld[pick] = SECOND
            continue
        exposed = recoverable(arcs, withheld)
        if not exposed:
            return withheld, True
        arc = next(a for a in arcs if a.entry == exposed[0])
        pick = _next_to_withhold(by_node[arc.tail] + by_node[arc.head], withheld, by_node, None)
        if pick is None:
            pick = _next_to_withhold(arcs, withheld, by_node, None)
        if pick is None:
            return withheld, False
        withheld[pick] = SECOND


def _next_to_withhold(
    arcs: Iterable[_Arc],
    withheld: Mapping[Entry, str],
    by_node: Mapping[Hashable, list[_Arc]],
    at: Hashable | None,
) -> Entry | None:
    """The released entry to withhold next, at balance `at` (or anywhere among arcs).

    Preferred: non-zero before zero (a zero adds nothing to a withheld sum); cells before
    totals; then an entry whose other balance already holds exactly one withheld entry
    (withholding it settles that balance too, closing a rectangle), then one whose other
    balance holds several (no new problem), then one that starts a new problem; smallest
    value first within each.
    """
    candidates = [a for a in arcs if a.entry not in withheld and a.entry != TOTAL]
    if not candidates:
        return None

    def other_end(a: _Arc) -> int:
        if at is None:
            return 1
        node = a.head if a.tail == at else a.tail
        hidden = sum(1 for b in by_node[node] if b.entry in withheld)
        return {1: 0, 0: 2}.get(hidden, 1)

    best = min(
        candidates,
        key=lambda a: (
            a.value == 0,
            a.entry[0] != "cell",
            other_end(a),
            a.value,
            _entry_key(a.entry),
        ),
    )
    return best.entry


def _entry_key(entry: Entry) -> tuple[object, ...]:
    from fedtre.analyses.labels import label_key

    return (entry[0], *(label_key(v) for v in entry[1:]))  # type: ignore[arg-type]


def entry_keys(keys: Mapping[Cell, int], *, two_way: bool) -> dict[Entry, int]:
    """Return the cell key of every entry: cells as given, each total the combined key of
    the cells it adds up (cellkey.combine_keys), so a total's key is its records' key."""
    out: dict[Entry, int] = {("cell", r, c): int(k) for (r, c), k in keys.items()}
    out[TOTAL] = cellkey.combine_keys(keys.values())
    if two_way:
        rows: dict[Label, list[int]] = {}
        cols: dict[Label, list[int]] = {}
        for (r, c), k in keys.items():
            rows.setdefault(r, []).append(k)
            cols.setdefault(c, []).append(k)
        out |= {("row", r): cellkey.combine_keys(ks) for r, ks in rows.items()}
        out |= {("col", c): cellkey.combine_keys(ks) for c, ks in cols.items()}
    return out


def protect_table(
    cells: Mapping[Cell, tuple[int, int]], policy: DisclosurePolicy, *, two_way: bool
) -> ProtectedTable:
    """Apply primary and secondary suppression to a table and its totals, then release.

    cells: every cell of the table with (exact count, cell key); a two-way table must
    hold the full grid of its row and column levels, zeros included (key 0 for a zero).
    Suppression decides on the exact counts; released entries are perturbed (or rounded)
    by fedtre.disclosure.release.count with their cell keys.
    """
    t = policy.threshold
    counts = {cell: int(n) for cell, (n, _) in cells.items()}
    keys = entry_keys({cell: int(k) for cell, (_, k) in cells.items()}, two_way=two_way)
    arcs = table_network(counts, two_way=two_way)
    total = arcs[0].value
    zero_ok = not policy.zeros_disclosive
    out = {a.entry: release.count(a.value, keys[a.entry], policy, zero_ok=zero_ok) for a in arcs}
    primary: dict[Entry, str] = {}
    for a in arcs:
        if 0 < a.value < t:
            primary[a.entry] = PRIMARY
        elif a.value == 0 and a.entry[0] == "cell" and policy.zeros_disclosive:
            primary[a.entry] = ZERO
        elif a.value > 0 and out[a.entry] is None:
            # at or above the threshold, but the TRE's table would release it below
            primary[a.entry] = PRIMARY
    ok = (
        total >= t
        and total > 0
        and TOTAL not in primary
        and any(a.entry not in primary for a in arcs if a.entry[0] == "cell")
    )
    if ok:
        withheld, ok = suppress(arcs, primary, t)
    if not ok:
        withheld = {a.entry: primary.get(a.entry, SECOND) for a in arcs}
    released = {a.entry: None if a.entry in withheld else out[a.entry] for a in arcs}
    cell_keys = [a.entry for a in arcs if a.entry[0] == "cell"]
    n_cells = len(cell_keys)
    kinds = [withheld.get(e) for e in cell_keys]
    small, zeros, second = kinds.count(PRIMARY), kinds.count(ZERO), kinds.count(SECOND)
    small_totals = sum(1 for e, why in withheld.items() if e[0] != "cell" and why == PRIMARY)
    rules = [
        _threshold_rule(t, n_cells, small, small_totals, total, ok),
        _zero_rule(policy, zeros, two_way),
        _secondary_rule(
            second, sum(1 for e, w in withheld.items() if e[0] != "cell" and w == SECOND), ok
        ),
        count_rule(policy),
    ]
    withheld_cells = small + zeros + second
    outcome = (
        Outcome.BLOCKED
        if not ok
        else outcome_for(released=n_cells - withheld_cells, withheld=withheld_cells)
    )
    if outcome is not Outcome.BLOCKED and any(e in withheld for e in released if e[0] != "cell"):
        outcome = Outcome.SUPPRESSED
    return ProtectedTable(
        cells={(e[1], e[2]): released[e] for e in cell_keys},  # type: ignore[misc]
        row_totals={e[1]: v for e, v in released.items() if e[0] == "row"},  # type: ignore[misc]
        column_totals={e[1]: v for e, v in released.items() if e[0] == "col"},  # type: ignore[misc]
        total=released[TOTAL],
        outcome=outcome,
        rules=tuple(rules),
        why=withheld,
    )


def _threshold_rule(
    t: int, n_cells: int, small: int, small_totals: int, total: int, ok: bool
) -> RuleResult:
    if total < t or total == 0:
        return RuleResult(
            THRESHOLD, False, f"the table has fewer than {t} records in total, so it is withheld"
        )
    if t == 0:
        return RuleResult(THRESHOLD, True, "no minimum count applies (threshold 0)")
    if not small and not small_totals:
        return RuleResult(THRESHOLD, True, f"every cell and total has at least {t} records")
    parts = []
    if small:
        parts.append(f"{small} of {n_cells} cells")
    if small_totals:
        parts.append(f"{small_totals} row or column {'total' if small_totals == 1 else 'totals'}")
    verb = "has" if small + small_totals == 1 else "have"
    return RuleResult(
        THRESHOLD, False, f"{' and '.join(parts)} {verb} fewer than {t} records; withheld"
    )


def _zero_rule(policy: DisclosurePolicy, zeros: int, two_way: bool) -> RuleResult:
    if not policy.zeros_disclosive:
        return RuleResult(ZERO_CELLS, True, "zero cells are released (zeros_disclosive = false)")
    if not zeros:
        return RuleResult(ZERO_CELLS, True, "no cell is zero")
    return RuleResult(
        ZERO_CELLS,
        False,
        f"{zeros} {'cell is' if zeros == 1 else 'cells are'} zero and withheld: a zero would "
        "reveal that nobody in its row has its column's value",
    )


def _secondary_rule(cells: int, totals: int, ok: bool) -> RuleResult:
    if not ok:
        return RuleResult(
            SECONDARY,
            False,
            "the withheld values could not be protected from recovery through the table's "
            "totals without withholding everything, so the table is withheld",
        )
    if not cells and not totals:
        return RuleResult(
            SECONDARY, True, "no withheld value can be recovered from the released figures"
        )
    what = []
    if cells:
        what.append(f"{cells} more {'cell' if cells == 1 else 'cells'}")
    if totals:
        what.append(f"{totals} {'total' if totals == 1 else 'totals'}")
    return RuleResult(
        SECONDARY,
        False,
        f"{' and '.join(what)} withheld so that no withheld value can be recovered from "
        "the row, column and grand totals",
    )
