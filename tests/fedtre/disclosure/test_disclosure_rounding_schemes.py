"""Rounding schemes: nearest multiple (halves up) and midpoint bins, applied after suppression."""

from __future__ import annotations

import pytest

from fedtre.disclosure import DisclosurePolicy, release
from fedtre.disclosure.rules import (
    apply_rounding,
    round_count,
    round_midpoint,
    rounding_result,
)

MIDPOINT6 = DisclosurePolicy(rounding="midpoint", rounding_base=6)


@pytest.mark.parametrize(
    ("n", "want"),
    [(0, 0), (1, 3), (6, 3), (7, 9), (12, 9), (13, 15), (18, 15), (19, 21)],
)
def test_midpoint_6_bins(n: int, want: int) -> None:
    assert round_midpoint(n, 6) == want
    assert apply_rounding(n, MIDPOINT6) == want


@pytest.mark.parametrize(("n", "want"), [(12, 10), (13, 15), (17, 15), (18, 20), (22, 20)])
def test_nearest_5(n: int, want: int) -> None:
    assert round_count(n, 5) == want


def test_nearest_tie_goes_up_at_every_base() -> None:
    for base in (2, 4, 10, 100):
        assert round_count(base // 2, base) == base
        assert round_count(base // 2 - 1, base) == 0


def test_threshold_is_applied_to_the_exact_count_before_rounding() -> None:
    policy = DisclosurePolicy(threshold=10, rounding_base=5, perturbation="rounding")
    # 9 would round to 10, but suppression decides on the exact count
    assert release.count(9, 0, policy) is None
    assert release.count(10, 0, policy) == 10
    midpoint = DisclosurePolicy(
        threshold=10, rounding="midpoint", rounding_base=6, perturbation="rounding"
    )
    assert release.count(9, 0, midpoint) is None
    assert release.count(10, 0, midpoint) == 9


def test_rounding_rule_says_which_scheme_applies() -> None:
    assert "midpoint of their bin of width 6" in rounding_result(MIDPOINT6).detail
    assert "1-6 -> 3, 7-12 -> 9" in rounding_result(MIDPOINT6).detail
    assert "nearest multiple of 5 (halves round up)" in rounding_result(DisclosurePolicy()).detail


def test_count_released_under_midpoint_6() -> None:
    policy = DisclosurePolicy(
        threshold=10, rounding="midpoint", rounding_base=6, perturbation="rounding"
    )
    assert release.count(14, 0, policy) == 15
