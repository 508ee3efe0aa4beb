"""Combining cells some nodes withheld: the combined value is withheld, never a partial sum."""

from __future__ import annotations

import pandas as pd

from fedtre.analyses import NodeOutput, Outcome, get_analysis

CROSSTAB = get_analysis("crosstab")
PARAMS = {"rows": "region", "columns": "sex", "margins": True}


def node(outcome: Outcome, cells: list[list], margins: dict | None = None) -> NodeOutput:
    payload = {"rows": "region", "columns": "sex", "cells": cells}
    if margins is not None:
        payload["margins"] = margins
    return NodeOutput(outcome, payload)


A = node(
    Outcome.SUPPRESSED,
    [["north", "F", 40], ["north", "M", None], ["west", "F", None], ["west", "M", 15]],
    {"total": 70, "rows": [["north", 55], ["west", None]], "columns": [["F", 45], ["M", 25]]},
)
B = node(
    Outcome.RELEASED,
    [["north", "F", 20], ["north", "M", 30], ["west", "F", 10], ["west", "M", 10]],
    {"total": 70, "rows": [["north", 50], ["west", 20]], "columns": [["F", 30], ["M", 40]]},
)


def test_a_cell_withheld_at_one_node_is_withheld_in_the_combination() -> None:
    combined = CROSSTAB.combine(PARAMS, {"tre-a": A, "tre-b": B})

    cells = {(r, c): n for r, c, n in combined["cells"]}
    assert cells == {
        ("north", "F"): 60,
        ("north", "M"): None,
        ("west", "F"): None,
        ("west", "M"): 25,
    }
    assert ["north", "M", ["tre-a"]] in combined["withheld"]
    # what tre-b released for a cell tre-a withheld does not leak as a "combined" value
    assert 30 not in [n for _, _, n in combined["cells"]]


def test_margins_combine_only_where_every_node_released_them() -> None:
    margins = CROSSTAB.combine(PARAMS, {"tre-a": A, "tre-b": B})["margins"]
    assert margins["total"] == 140
    assert margins["rows"] == [["north", 105], ["west", None]]
    assert margins["columns"] == [["F", 75], ["M", 65]]


def test_a_blocked_or_held_node_withholds_every_combined_value() -> None:
    for outcome in (Outcome.BLOCKED, Outcome.HELD):
        withholding = NodeOutput(outcome, {})
        combined = CROSSTAB.combine(PARAMS, {"tre-b": B, "tre-c": withholding})
        assert all(n is None for _, _, n in combined["cells"])
        assert combined["margins"]["total"] is None
        frame = CROSSTAB.to_frame(PARAMS, combined)
        assert frame.isna().all().all()


def test_the_node_table_shows_withheld_cells_and_totals_as_na() -> None:
    frame = CROSSTAB.to_frame(PARAMS, A.payload)
    assert pd.isna(frame.loc["north", "M"]) and frame.loc["north", "F"] == 40
    assert frame.loc["Total", "Total"] == 70
    assert pd.isna(frame.loc["west", "Total"])
