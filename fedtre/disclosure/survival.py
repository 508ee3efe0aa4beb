"""Survival tables on the TRE's time grid: every number at risk, event and censoring count is safe.

A node counts, per group and per grid interval ((i - 1) w, i w] of the time column (w the
TRE's grid or a coarser multiple the researcher chose), the events and the censorings,
with the cell key of each count (fedtre.disclosure.cellkey), in one GROUP BY. From
consecutive rows anyone can derive the number at risk and the number censored in
between, so every one of them is a count of people to protect.

protect_survival_table merges consecutive grid intervals, on their TRUE counts, until in
every interval the events are at least the threshold (or 0, where zeros are not
disclosive) and the censorings are 0 or at least the threshold; what cannot form such an
interval at the end is merged back into the last one. Empty grid intervals join the next
non-empty one, except where zeros are not disclosive: there a stretch of empty grid
intervals between two released intervals is released as an interval of its own, with
no events and no censorings, so that an interval wider than one grid cell always means
merged records (the coordinator spreads those over it: fedtre.analyses.kaplan_meier).
The first interval keeps its leading empty cells (its start is open). Then:

- interval bounds are grid points (the caller releases them with release.bound);
- the first interval's start and the last interval's end are open (never released): the
  last interval holds the longest follow-up, so its end would reveal it to within the
  grid, and it is "after <its start>";
- the number at risk at each interval's start (records in it or later), its events and
  its censorings leave through release.count with the cell key of exactly the records
  each counts (the key of a union of intervals combines theirs).

A table with fewer than max(threshold, 1) records, or one that cannot be merged safely,
is withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedtre.analyses.base import Outcome, RuleResult
from fedtre.disclosure import cellkey, release
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import SURVIVAL


@dataclass(frozen=True)
class GridCell:
    """One non-empty grid interval ((index - 1) w, index w] of one group, true counts."""

    index: int
    events: int
    censored: int
    event_key: int
    censored_key: int


@dataclass(frozen=True)
class SurvivalInterval:
    """Released counts of the grid interval (start w, end w]; at_risk at its start.

    start is None for the first interval and end None for the last (open bounds).
    """

    start: int | None
    end: int | None
    at_risk: int
    events: int
    censored: int


@dataclass(frozen=True)
class ProtectedSurvival:
    intervals: tuple[SurvivalInterval, ...]
    outcome: Outcome
    rules: tuple[RuleResult, ...]


@dataclass
class _Run:
    """Consecutive cells merged into one interval (true counts, keys, last index)."""

    end: int
    events: int
    censored: int
    event_key: int
    censored_key: int
    first: int  # the first non-empty grid cell

    def join(self, other: _Run) -> None:
        self.end = max(self.end, other.end)
        self.first = min(self.first, other.first)
        self.events += other.events
        self.censored += other.censored
        self.event_key = cellkey.combine_keys([self.event_key, other.event_key])
        self.censored_key = cellkey.combine_keys([self.censored_key, other.censored_key])


def protect_survival_table(
    cells: Sequence[GridCell], policy: DisclosurePolicy
) -> ProtectedSurvival:
    """Merge a group's grid cells (sorted by index) into safe intervals and release them."""
    t = policy.threshold
    total = sum(c.events + c.censored for c in cells)
    if total < max(t, 1):
        return _withheld(f"the table has fewer than {max(t, 1)} records, so it is withheld")
    runs: list[_Run] = []
    current: _Run | None = None
    for cell in sorted(cells, key=lambda c: c.index):
        run = _Run(
            cell.index, cell.events, cell.censored, cell.event_key, cell.censored_key, cell.index
        )
        if current is None:
            current = run
        else:
            current.join(run)
        if _safe(current, policy):
            runs.append(current)
            current = None
    if current is not None:
        if runs:
            runs[-1].join(current)
        else:
            runs.append(current)
    # The tail may have left the last interval unsafe: merge it back.
    while len(runs) > 1 and not _safe(runs[-1], policy):
        last = runs.pop()
        runs[-1].join(last)
    if not _safe(runs[-1], policy):
        return _withheld(
            f"the follow-up could not be grouped so that every count is at least {t}, "
            "so the table is withheld"
        )
    intervals = _release(runs, policy)
    if intervals is None:
        return _withheld("a count fell below the threshold after perturbation")
    cells_used = len({c.index for c in cells})
    detail = f"every number at risk, event count and censoring count is at least {t} (or 0)"
    if len(intervals) < cells_used:
        detail += f"; {cells_used} grid intervals are merged into {len(intervals)}"
    rule = RuleResult(SURVIVAL, True, detail)
    return ProtectedSurvival(tuple(intervals), Outcome.RELEASED, (rule,))


def _safe(run: _Run, policy: DisclosurePolicy) -> bool:
    t = policy.threshold
    events_ok = run.events >= max(t, 1) or (run.events == 0 and not policy.zeros_disclosive)
    censored_ok = run.censored == 0 or run.censored >= t
    return events_ok and censored_ok and run.events + run.censored > 0


def _release(runs: list[_Run], policy: DisclosurePolicy) -> list[SurvivalInterval] | None:
    """Release each run's counts; a run with a count the release stage withholds (only a
    TRE's own table can do that) joins its neighbour, and the release is tried again."""
    while runs:
        released: list[SurvivalInterval] = []
        at_risk = sum(r.events + r.censored for r in runs)
        risk_key = cellkey.combine_keys(k for r in runs for k in (r.event_key, r.censored_key))
        failed = None
        for i, run in enumerate(runs):
            n = release.count(at_risk, risk_key, policy)
            d = release.count(
                run.events, run.event_key, policy, zero_ok=not policy.zeros_disclosive
            )
            c = release.count(run.censored, run.censored_key, policy, zero_ok=True)
            if n is None or d is None or c is None:
                failed = i
                break
            start = runs[i - 1].end if i > 0 else None
            end = run.end if i < len(runs) - 1 else None
            if start is not None and run.first - 1 > start and not policy.zeros_disclosive:
                # the empty grid intervals before the run: nobody's time ends there
                zero = release.count(0, 0, policy, zero_ok=True)
                assert zero is not None  # a zero the analysis may show always leaves
                released.append(SurvivalInterval(start, run.first - 1, n, zero, zero))
                start = run.first - 1
            released.append(SurvivalInterval(start, end, n, d, c))
            at_risk -= run.events + run.censored
            risk_key = cellkey.combine_keys([risk_key, -run.event_key, -run.censored_key])
        if failed is None:
            return released
        if len(runs) == 1:
            return None
        j = failed + 1 if failed + 1 < len(runs) else failed - 1
        a, b = sorted((failed, j))
        runs[a].join(runs[b])
        del runs[b]
    return None


def _withheld(detail: str) -> ProtectedSurvival:
    return ProtectedSurvival((), Outcome.BLOCKED, (RuleResult(SURVIVAL, False, detail),))
