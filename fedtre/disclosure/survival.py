"""Survival tables: every number at risk, event count and derivable censoring count is safe.

A Kaplan-Meier table lists, per event time, the number at risk and the events; from
consecutive rows anyone can derive the number censored in between. Each of these is a
count of people, so each must be at least the threshold (censored may also be 0).
protect_survival_table merges consecutive event times into intervals until every
interval has at least `threshold` events and 0 or at least `threshold` censored; rows
that cannot form such an interval at the end are merged into the last one. Times are
released as interval bounds, never as an individual's exact event time unless at least
`threshold` events share it. A table with fewer than `threshold` records or events in
all is withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedtre.analyses.base import Outcome, RuleResult
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import SURVIVAL


@dataclass(frozen=True)
class SurvivalInterval:
    """Events and censoring between start and end (inclusive); at_risk at start."""

    start: float
    end: float
    at_risk: int
    events: int
    censored: int


@dataclass(frozen=True)
class ProtectedSurvival:
    intervals: tuple[SurvivalInterval, ...]
    outcome: Outcome
    rules: tuple[RuleResult, ...]


def protect_survival_table(
    rows: Sequence[tuple[float, int, int]], policy: DisclosurePolicy
) -> ProtectedSurvival:
    """Merge (time, events, censored) rows, sorted by time, into safe intervals.

    The number at risk at each interval's start is the records not yet ended before it.
    """
    t = policy.threshold
    total = sum(e + c for _, e, c in rows)
    if total < t or sum(e for _, e, _ in rows) < t or not rows:
        rule = RuleResult(
            SURVIVAL,
            False,
            f"the table has fewer than {t} records or events in all, so it is withheld",
        )
        return ProtectedSurvival((), Outcome.BLOCKED, (rule,))
    groups: list[list[tuple[float, int, int]]] = []
    current: list[tuple[float, int, int]] = []
    for row in rows:
        current.append(row)
        events = sum(e for _, e, _ in current)
        censored = sum(c for _, _, c in current)
        if events >= t and (censored == 0 or censored >= t):
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    # The tail may have left the last interval with 0 < censored < threshold: merge back.
    while len(groups) > 1 and not _safe_group(groups[-1], t):
        last = groups.pop()
        groups[-1].extend(last)
    intervals = []
    at_risk = total
    for group in groups:
        events = sum(e for _, e, _ in group)
        censored = sum(c for _, _, c in group)
        intervals.append(SurvivalInterval(group[0][0], group[-1][0], at_risk, events, censored))
        at_risk -= events + censored
    unsafe = [i for i in intervals if i.at_risk < t or i.events < t or 0 < i.censored < t]
    if unsafe:
        rule = RuleResult(
            SURVIVAL,
            False,
            f"the event times could not be grouped so that every count is at least {t}, "
            "so the table is withheld",
        )
        return ProtectedSurvival((), Outcome.BLOCKED, (rule,))
    merged = len(intervals) < len(rows)
    detail = f"every number at risk, event count and censoring count is at least {t} (or 0)"
    if merged:
        detail += f"; {len(rows)} event times are grouped into {len(intervals)} intervals"
    outcome = Outcome.SUPPRESSED if merged else Outcome.RELEASED
    return ProtectedSurvival(tuple(intervals), outcome, (RuleResult(SURVIVAL, not merged, detail),))


def _safe_group(group: Sequence[tuple[float, int, int]], t: int) -> bool:
    events = sum(e for _, e, _ in group)
    censored = sum(c for _, _, c in group)
    return events >= t and (censored == 0 or censored >= t)
