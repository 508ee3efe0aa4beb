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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    results: list[RuleResult] = []
    groups = len(verdicts)
    nk = sum(v.nk_fails and not v.has_negative for v in verdicts)
    pp = sum(v.p_fails and not v.has_negative for v in verdicts)
    if policy.dominance_n > 0:
        n, k = policy.dominance_n, policy.dominance_k
        if nk:
            results.append(
                RuleResult(
                    NK_DOMINANCE,
                    False,
                    f"{_of(nk, groups)} the largest {n} contributions make up {k:g}% or more "
                    f"of the total, so {what} is withheld there",
                )
            )
        else:
            results.append(
                RuleResult(
                    NK_DOMINANCE,
                    True,
                    f"no {n} contributions make up {k:g}% or more of a group's total",
                )
            )
    if policy.p_percent > 0:
        p = policy.p_percent
        if pp:
            results.append(
                RuleResult(
                    P_PERCENT,
                    False,
                    f"{_of(pp, groups)} the second-largest contributor could estimate the "
                    f"largest to within {p:g}%, so {what} is withheld there",
                )
            )
        else:
            results.append(
                RuleResult(P_PERCENT, True, f"no contribution can be estimated to within {p:g}%")
            )
    if policy.dominance_on and any(v.has_negative for v in verdicts):
        results.append(
            RuleResult(
                REVIEW,
                False,
                "negative values make the dominance rules inapplicable; the output waits for "
                "the TRE's output checker",
            )
        )
    return results


def _of(k: int, groups: int) -> str:
    if groups == 1:
        return "in the only group"
    return f"in {k} of {groups} groups"
