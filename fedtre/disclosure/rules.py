"""Disclosure rules as small functions: the minimum-count threshold and rounding of counts.

Conventions every analysis follows:

- A count below `policy.threshold` is withheld: its value is replaced by None and the
  "threshold" rule fails with a detail that never states the withheld value.
- Released counts are rounded after suppression (suppression decides on exact counts).
  "nearest": to the nearest multiple of `policy.rounding_base`, an exact half rounding up
  (base 10: 15 -> 20, 14 -> 10); base 1 releases counts exactly. "midpoint": bins of width
  rounding_base released as their midpoint (base 6: 0 -> 0, 1-6 -> 3, 7-12 -> 9).
- Outcome: nothing withheld -> RELEASED; some values withheld -> SUPPRESSED; nothing
  left to release -> BLOCKED.
- A failed "review" rule holds the output for the TRE's output checker (see needs_review).

The analyses import this module rather than names from it (`from fedtre.disclosure
import rules`) because it imports fedtre.analyses.base, whose package imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedtre.analyses.base import Outcome, RuleResult
from fedtre.disclosure.policy import DisclosurePolicy

THRESHOLD = "threshold"
ROUNDING = "rounding"
ZERO_CELLS = "zero_cells"
SECONDARY = "secondary_suppression"
NK_DOMINANCE = "nk_dominance"
P_PERCENT = "p_percent"
SD_THRESHOLD = "sd_threshold"
EXTREMES = "extremes"
COHORT_SIZE = "cohort_size"
DIFFERENCING = "differencing"
REVIEW = "review"
# A task waiting for, or refused by, the TRE operator's approval of its project or job.
OPERATOR_APPROVAL = "operator_approval"
RESIDUAL_DF = "residual_df"
PARAMETERS = "parameters"
LEVEL_COUNTS = "level_counts"
TABLE_MODEL = "table_model"
LEVERAGE = "leverage"
EVENTS_PER_PARAMETER = "events_per_parameter"
PERTURBATION = "perturbation"
SURVIVAL = "survival_threshold"
QUANTILE = "quantile_position"


def needs_review(rules: Sequence[RuleResult]) -> bool:
    """Return True when a failed "review" rule asks for the TRE's output checker."""
    return any(r.rule == REVIEW and not r.passed for r in rules)


def meets_threshold(n: int, policy: DisclosurePolicy) -> bool:
    """Return True when a count (or the n behind a statistic) may be released."""
    return n >= policy.threshold


def round_count(n: int, base: int) -> int:
    """Return n rounded to the nearest multiple of base, an exact half rounding up."""
    if base == 1:
        return n
    # floor(n / base + 1/2) * base in integers, so there is no float error for large n.
    return (2 * n + base) // (2 * base) * base


def round_midpoint(n: int, base: int) -> int:
    """Return n as the midpoint of its bin of width base: 0 -> 0, 1..base -> base/2, ...

    base must be even (base 6 is "midpoint-6": 1-6 -> 3, 7-12 -> 9, 13-18 -> 15).
    """
    if n <= 0:
        return 0
    return -(-n // base) * base - base // 2


def apply_rounding(n: int, policy: DisclosurePolicy) -> int:
    """Return a count rounded by the policy's scheme (the threshold is not applied here)."""
    if policy.rounding == "midpoint":
        return round_midpoint(n, policy.rounding_base)
    return round_count(n, policy.rounding_base)


def outcome_for(*, released: int, withheld: int) -> Outcome:
    """Return the outcome of an output that releases `released` values and withholds `withheld`."""
    if withheld == 0:
        return Outcome.RELEASED
    if released == 0:
        return Outcome.BLOCKED
    return Outcome.SUPPRESSED


def rounding_result(policy: DisclosurePolicy) -> RuleResult:
    """Return the rounding rule as applied to released counts."""
    base = policy.rounding_base
    if policy.rounding == "midpoint":
        return RuleResult(
            ROUNDING,
            True,
            f"counts are released as the midpoint of their bin of width {base} "
            f"(1-{base} -> {base // 2}, {base + 1}-{2 * base} -> {base + base // 2}, ...)",
        )
    if base == 1:
        return RuleResult(ROUNDING, True, "counts are released exactly (rounding base 1)")
    return RuleResult(
        ROUNDING, True, f"counts are rounded to the nearest multiple of {base} (halves round up)"
    )


def count_rule(policy: DisclosurePolicy) -> RuleResult:
    """Return the rule saying how released counts are protected beyond the threshold: the
    cell-key method's noise, or the rounding the TRE chose instead."""
    if policy.perturbation == "rounding":
        return rounding_result(policy)
    table = policy.ptable.description or "the TRE's own"
    return RuleResult(
        PERTURBATION,
        True,
        f"counts carry consistent cell-key noise (perturbation table: {table}); sums and "
        f"means carry consistent noise of at most {policy.magnitude_noise:g} x the largest "
        "value",
    )


def _no_threshold(policy: DisclosurePolicy) -> RuleResult | None:
    if policy.threshold == 0:
        return RuleResult(THRESHOLD, True, "no minimum count applies (threshold 0)")
    return None


def _cells_have(k: int) -> str:
    return "cell has" if k == 1 else "cells have"


def _groups_have(k: int) -> str:
    return "group has" if k == 1 else "groups have"


@dataclass(frozen=True)
class CheckedGroups:
    """Which groups of a statistic may be released, by the size of each group."""

    released: tuple[bool, ...]
    outcome: Outcome
    rules: tuple[RuleResult, ...]


def check_group_sizes(
    sizes: Sequence[int], policy: DisclosurePolicy, *, column: str, grouped: bool
) -> CheckedGroups:
    """Check the n behind each group of a statistic of `column` (one group when ungrouped).

    A group with n below the threshold is withheld whole. No groups at all is judged
    as n = 0: BLOCKED unless the threshold is 0.
    """
    t = policy.threshold
    released = tuple(meets_threshold(n, policy) for n in sizes)
    withheld = released.count(False)
    if not sizes:
        outcome = Outcome.RELEASED if meets_threshold(0, policy) else Outcome.BLOCKED
        result = _no_threshold(policy) or RuleResult(
            THRESHOLD, False, f"fewer than {t} non-missing values of {column!r}, so it is withheld"
        )
        return CheckedGroups((), outcome, (result,))
    if not grouped:
        if withheld:
            detail = f"the summary rests on fewer than {t} non-missing values of {column!r}"
            result = RuleResult(THRESHOLD, False, detail + ", so it is withheld")
        else:
            result = _no_threshold(policy) or RuleResult(
                THRESHOLD, True, f"the summary rests on at least {t} non-missing values"
            )
    elif withheld:
        result = RuleResult(
            THRESHOLD,
            False,
            f"{withheld} of {len(sizes)} {_groups_have(withheld)} fewer than {t} non-missing "
            f"values of {column!r}; their statistics are withheld",
        )
    else:
        result = _no_threshold(policy) or RuleResult(
            THRESHOLD, True, f"every group has at least {t} non-missing values"
        )
    outcome = outcome_for(released=len(sizes) - withheld, withheld=withheld)
    return CheckedGroups(released, outcome, (result,))
