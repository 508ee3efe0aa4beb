"""Dominance rules for magnitude outputs (sums, and means, which reveal sums with their n).

A cell's total is "dominated" when a few contributors make up most of it: then any
contributor, or someone who knows one, can estimate another's value closely.

- NK rule: fail when the largest n contributors make up k% or more of the total
  (default n = 2, k = 90). A total of 0 fails: it reveals that every value is 0.
- p% rule: fail when the total less the two largest contributors is below p% of the
  largest (default p = 10): the second-largest contributor could then estimate the
  largest to within p%.

Both rules assume non-negative contributions. A negative value makes the total a
difference, which neither rule can judge, so the output goes to the TRE's output
checker (a failed "review" rule) rather than being released or blocked automatically.

The inputs are computed at the agent, in SQL, and never released: the group's total,
its largest contributions in descending order (fedtre.analyses.contributors), and its
smallest value (to detect negatives).

This module is the one place for NK and p%: per group (judge_group, dominance_rules:
summary) and per column (columns_dominance_rules: correlation and the model analyses,
whose outputs reveal each numeric column's total).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedtre.analyses.base import RuleResult
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import NK_DOMINANCE, P_PERCENT, REVIEW

# Relative slack for float sums: a share exactly at the limit counts as reaching it.
_EPS = 1e-9


def nk_dominated(top: Sequence[float], total: float, n: int, k: float) -> bool:
    """Return True when the largest n of `top` (descending) reach k% of total (NK fails)."""
    if n <= 0:
        return False
    share = math.fsum(top[:n])
    limit = k / 100.0 * total
    return share >= limit - _EPS * max(abs(limit), 1.0)


def p_percent_unsafe(top: Sequence[float], total: float, p: float) -> bool:
    """Return True when total - x1 - x2 < p% of x1 (the p% rule fails)."""
    if p <= 0:
        return False
    x1 = top[0] if top else 0.0
    x2 = top[1] if len(top) > 1 else 0.0
    remainder = total - x1 - x2
    bound = p / 100.0 * x1
    return remainder < bound - _EPS * max(abs(bound), 1.0)


@dataclass(frozen=True)
class GroupDominance:
    """The dominance verdict on one group: safe, dominated, or needing review."""

    nk_fails: bool
    p_fails: bool
    has_negative: bool

    @property
    def dominated(self) -> bool:
        return not self.has_negative and (self.nk_fails or self.p_fails)


def judge_group(
    top: Sequence[float], total: float, minimum: float | None, policy: DisclosurePolicy
) -> GroupDominance:
    """Return the dominance verdict on one group from its top values, total and minimum."""
    if minimum is not None and minimum < 0:
        return GroupDominance(False, False, True)
    return GroupDominance(
        nk_fails=nk_dominated(top, total, policy.dominance_n, policy.dominance_k),
        p_fails=p_percent_unsafe(top, total, policy.p_percent),
        has_negative=False,
    )


def dominance_rules(
    verdicts: Sequence[GroupDominance], policy: DisclosurePolicy, *, what: str
) -> list[RuleResult]:
    """Return the NK, p% and (if needed) review rule results over a statistic's groups.

    `what` names the statistic in the details, e.g. "the mean of 'income'".
    """
    groups = len(verdicts)
    nk = sum(v.nk_fails and not v.has_negative for v in verdicts)
    pp = sum(v.p_fails and not v.has_negative for v in verdicts)
    return _rule_results(
        policy,
        nk_where=_of(nk, groups) if nk else None,
        p_where=_of(pp, groups) if pp else None,
        negative_where="" if any(v.has_negative for v in verdicts) else None,
        what=f"{what} is withheld there",
        unit="a group's",
    )


def _rule_results(
    policy: DisclosurePolicy,
    *,
    nk_where: str | None,
    p_where: str | None,
    negative_where: str | None,
    what: str,
    unit: str,
) -> list[RuleResult]:
    """Return the NK, p% and review results; each *_where says where that rule failed
    ("in 2 of 3 groups", "in 'income'"; None: nowhere). The one text of both rules."""
    results: list[RuleResult] = []
    if policy.dominance_n > 0:
        n, k = policy.dominance_n, policy.dominance_k
        if nk_where is not None:
            detail = f"{nk_where} the largest {n} contributions make up {k:g}% or more of the "
            results.append(RuleResult(NK_DOMINANCE, False, detail + f"total, so {what}"))
        else:
            detail = f"no {n} contributions make up {k:g}% or more of {unit} total"
            results.append(RuleResult(NK_DOMINANCE, True, detail))
    if policy.p_percent > 0:
        p = policy.p_percent
        if p_where is not None:
            detail = f"{p_where} the second-largest contributor could estimate the largest to "
            results.append(RuleResult(P_PERCENT, False, detail + f"within {p:g}%, so {what}"))
        else:
            detail = f"no contribution can be estimated to within {p:g}%"
            results.append(RuleResult(P_PERCENT, True, detail))
    if policy.dominance_on and negative_where is not None:
        where = f" in {negative_where}" if negative_where else ""
        results.append(
            RuleResult(
                REVIEW,
                False,
                f"negative values{where} make the dominance rules inapplicable; the output "
                "waits for the TRE's output checker",
            )
        )
    return results


def _of(k: int, groups: int) -> str:
    if groups == 1:
        return "in the only group"
    return f"in {k} of {groups} groups"


# -- per column (correlation, models) ---------------------------------------------------


def judge_columns(
    contributions: Mapping[str, Mapping[str, Any]], policy: DisclosurePolicy
) -> dict[str, GroupDominance]:
    """Return the verdict on each column total (contributors.contribution entries)."""
    return {
        name: judge_group(c["top"], float(c["total"]), c["minimum"], policy)
        for name, c in contributions.items()
    }


def columns_dominance_rules(
    contributions: Mapping[str, Mapping[str, Any]], policy: DisclosurePolicy, *, what: str
) -> list[RuleResult]:
    """Return the NK, p% and (if needed) review rule results over column totals.

    contributions: per column, its total, minimum and largest values over the output's
    records (fedtre.analyses.contributors.contribution). A failed NK or p% rule names the
    columns (researcher parameters, never data values); the caller blocks or withholds
    `what` (e.g. "the model") when one fails. Empty when the policy turns both rules off.
    """
    if not policy.dominance_on:
        return []
    verdicts = judge_columns(contributions, policy)

    def named(failing: list[str]) -> str | None:
        return "in " + ", ".join(repr(c) for c in failing) if failing else None

    negative = [c for c, v in verdicts.items() if v.has_negative]
    return _rule_results(
        policy,
        nk_where=named([c for c, v in verdicts.items() if v.nk_fails and not v.has_negative]),
        p_where=named([c for c, v in verdicts.items() if v.p_fails and not v.has_negative]),
        negative_where=", ".join(repr(c) for c in negative) if negative else None,
        what=f"{what} is withheld",
        unit="a column's",
    )
