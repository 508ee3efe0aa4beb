"""Withheld levels leave without their labels, and combination never fills the gap."""

from __future__ import annotations

from fedtre.analyses import NodeOutput, get_analysis
from fedtre.disclosure import DisclosurePolicy

POLICY = DisclosurePolicy(threshold=10, rounding_base=1)
# Crosstab tests: counts released exactly, so only suppression is under test.
TABLE_POLICY = DisclosurePolicy(threshold=10, rounding_base=1, perturbation="rounding")
CROSSTAB = get_analysis("crosstab")
SUMMARY = get_analysis("summary")


def one_way(counts: dict[str, int], policy: DisclosurePolicy = TABLE_POLICY) -> NodeOutput:
    raw = {
        "cells": [
            [label, None, n, (31 * i + 7) % 256] for i, (label, n) in enumerate(counts.items())
        ]
    }
    return CROSSTAB.check({"rows": "age"}, raw, policy)


def test_a_withheld_level_leaves_without_its_label():
    for policy in (TABLE_POLICY, DisclosurePolicy()):
        output = one_way({"40": 30, "50": 25, "60": 40, "97": 2}, policy)

        shown = {c[0]: c[2] for c in output.payload["cells"]}
        assert "97" not in repr(output.payload)
        assert all(n is not None for n in shown.values())  # only released levels are named
        assert "hidden" not in output.payload  # not even how many levels were dropped
        assert output.outcome.value == "suppressed"


def test_a_level_one_node_hid_is_unknown_in_the_combination():
    # tre-a hid a level (its "97" count is small); tre-b released 97 = 15.
    a = one_way({"40": 30, "50": 25, "60": 40, "97": 2})
    b = one_way({"40": 20, "50": 30, "60": 45, "97": 15})
    shown_at_a = {c[0] for c in a.payload["cells"]}

    combined = CROSSTAB.combine({"rows": "age"}, {"tre-a": a, "tre-b": b})
    cells = {r: n for r, _, n in combined["cells"]}

    assert cells["97"] is None  # never tre-b's 15 presented as the pooled count
    assert ["97", None, ["tre-a"]] in combined["withheld"]
    for level in shown_at_a:
        assert cells[level] is not None


def test_two_way_levels_are_hidden_only_when_every_figure_beside_them_is_withheld():
    raw = {
        "cells": [
            ["F", "yes", 40],
            ["F", "no", 35],
            ["M", "yes", 30],
            ["M", "no", 25],
            ["X", "yes", 1],
            ["X", "no", 1],
        ]
    }
    raw["cells"] = [[*cell, (17 * i) % 256] for i, cell in enumerate(raw["cells"])]
    output = CROSSTAB.check({"rows": "sex", "columns": "smoker"}, raw, TABLE_POLICY)

    rows = {r for r, _, n in output.payload["cells"]}
    assert "X" not in repr(output.payload)
    assert "F" in rows  # F has released cells beside it, so its label stays
    assert "hidden" not in output.payload


def summary_raw(label: str | None, n: int, mean: float, sd: float, key: int = 0) -> list:
    """A summary group as compute() gives it: label, n, mean, M2, top values, min, max, key."""
    return [label, n, mean, sd * sd * (n - 1), [], mean - 2 * sd, mean + 2 * sd, key]


def summary_output(groups: dict[str, tuple[int, float, float]]) -> NodeOutput:
    raw = {"groups": [summary_raw(g, n, mean, sd) for g, (n, mean, sd) in groups.items()]}
    policy = DisclosurePolicy(
        threshold=10, perturbation="rounding", rounding_base=1, dominance_n=0, p_percent=0
    )
    return SUMMARY.check({"column": "sbp", "by": "region"}, raw, policy)


def test_a_single_withheld_group_takes_the_smallest_other_with_it():
    output = summary_output(
        {
            "north": (50, 130.0, 12.0),
            "south": (20, 128.0, 11.0),
            "east": (40, 135.0, 14.0),
            "west": (4, 150.0, 9.0),
        }
    )

    released = {g[0] for g in output.payload["groups"]}
    assert released == {"north", "east"}  # west (small) and south (smallest other) withheld
    # nothing says which groups, or how many, were withheld
    assert "west" not in repr(output.payload) and "south" not in repr(output.payload)
    assert set(output.payload) == {"column", "by", "groups"}
    rule = next(r for r in output.rules if r.rule == "secondary_suppression")
    assert not rule.passed


def test_summary_n_is_rounded_like_a_count():
    policy = DisclosurePolicy(
        threshold=10, perturbation="rounding", rounding_base=5, dominance_n=0, p_percent=0
    )
    raw = {"groups": [summary_raw(None, 23, 130.0, 12.0)]}

    output = SUMMARY.check({"column": "sbp"}, raw, policy)

    assert output.payload["groups"][0][1] == 25


def test_a_group_one_node_hid_is_unknown_in_the_combination():
    a = summary_output(
        {
            "north": (50, 130.0, 12.0),
            "east": (40, 135.0, 14.0),
            "west": (4, 150.0, 9.0),
            "south": (3, 120.0, 5.0),
        }
    )
    b = summary_output(
        {
            "north": (30, 131.0, 10.0),
            "east": (35, 133.0, 12.0),
            "west": (25, 149.0, 8.0),
            "south": (22, 121.0, 6.0),
        }
    )

    combined = SUMMARY.combine({"column": "sbp", "by": "region"}, {"tre-a": a, "tre-b": b})
    groups = {g[0]: g[1:] for g in combined["groups"]}

    assert groups["west"] == [None, None, None] and groups["south"] == [None, None, None]
    assert groups["north"][0] == 80
