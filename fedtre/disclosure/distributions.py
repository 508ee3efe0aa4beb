"""Rules for distributions: quantiles, histogram bins and their edges, minimum and maximum.

- Minimum and maximum are never released as such: each is one record's value.
- A quantile is released only when at least `threshold` values lie on each side of it
  (counting the values it interpolates between), so it is never an extreme value or
  close to one.
- A histogram bin holds 0 or at least `threshold` records; the outer edges are rounded
  outward to the bin width so they are not the data's exact minimum and maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedtre.analyses.base import RuleResult
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import EXTREMES, QUANTILE, THRESHOLD

EXTREMES_RULE = RuleResult(EXTREMES, True, "the minimum and maximum are never released")


def quantile_is_safe(q: float, n: int, policy: DisclosurePolicy) -> bool:
    """Return True when the q-quantile of n values (linear interpolation) may be released.

    The quantile sits at position h = q (n - 1) of the sorted values (0-based); the values
    at and below floor(h) and at and above ceil(h) must each number at least threshold.
    """
    if n <= 0 or not 0.0 <= q <= 1.0:
        return False
    h = q * (n - 1)
    below = math.floor(h) + 1
    above = n - math.ceil(h)
    return min(below, above) >= max(policy.threshold, 1)


def quantile_rule(qs: Sequence[float], n: int, policy: DisclosurePolicy) -> RuleResult:
    """Return the rule result for quantiles qs of n values."""
    unsafe = [q for q in qs if not quantile_is_safe(q, n, policy)]
    t = policy.threshold
    if unsafe:
        return RuleResult(
            QUANTILE,
            False,
            f"quantile(s) {', '.join(f'{q:g}' for q in unsafe)} have fewer than {t} values on "
            "one side, so they are withheld",
        )
    return RuleResult(QUANTILE, True, f"every quantile has at least {t} values on each side")


def bin_is_safe(n: int, policy: DisclosurePolicy) -> bool:
    """Return True when a histogram bin count may be released (0, or at least threshold)."""
    return n == 0 or n >= policy.threshold


def check_bins(counts: Sequence[int], policy: DisclosurePolicy) -> tuple[list[bool], RuleResult]:
    """Return, per bin, whether it may be released, and the threshold rule's result."""
    safe = [bin_is_safe(n, policy) for n in counts]
    bad = safe.count(False)
    t = policy.threshold
    if bad:
        return safe, RuleResult(
            THRESHOLD, False, f"{bad} of {len(counts)} bins have between 1 and {t - 1} records"
        )
    return safe, RuleResult(THRESHOLD, True, f"every bin has 0 or at least {t} records")


def outer_edges(minimum: float, maximum: float, width: float) -> tuple[float, float]:
    """Return histogram edges rounded outward to multiples of width, strictly beyond the data.

    The upper edge is always above the maximum; the lower edge is at or below the minimum
    and a multiple of width, so neither is an exact data value unless the data happen to
    fall on the grid.
    """
    if width <= 0:
        raise ValueError("bin width must be positive")
    low = math.floor(minimum / width) * width
    high = (math.floor(maximum / width) + 1) * width
    return low, high
