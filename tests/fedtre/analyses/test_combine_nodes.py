"""Combination at the coordinator: who is included, and withheld values stay withheld."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from analysis_testkit import roundtrip

from fedtre.analyses import NodeOutput, Outcome, get_analysis
from fedtre.errors import InvalidRequest


def out(payload: dict[str, Any], outcome: Outcome = Outcome.RELEASED) -> NodeOutput:
    """A node output as the coordinator receives it: after a Struct round trip."""
    return NodeOutput(outcome=outcome, payload=roundtrip(payload))


COUNT = get_analysis("count")
CROSSTAB = get_analysis("crosstab")
SUMMARY = get_analysis("summary")


def test_count_sums_released_nodes_as_an_int() -> None:
    result = COUNT.combine({}, {"a": out({"n": 15}), "b": out({"n": 240})})
    assert result["n"] == 255 and isinstance(result["n"], int)
    assert result["nodes"] == {"included": ["a", "b"], "excluded": {}}


def test_count_leaves_out_nodes_that_did_not_answer_and_says_so() -> None:
    outputs = {
        "a": out({"n": 20}),
        "c": NodeOutput(Outcome.FAILED, {}, error="database unavailable"),
        "d": NodeOutput(Outcome.REFUSED, {}),
        "e": out({"n": 35}),
    }
    result = COUNT.combine({}, outputs)
    assert result["n"] == 55
    assert result["withheld_by"] == []
    assert result["nodes"] == {
        "included": ["a", "e"],
        "excluded": {"c": "failed", "d": "refused"},
    }


def test_count_blocked_at_a_node_makes_the_combined_count_null() -> None:
    # A blocked node has records but too few to release: the others' sum is not the pool
    outputs = {"a": out({"n": 20}), "b": out({"n": None}, Outcome.BLOCKED), "e": out({"n": 35})}
    result = COUNT.combine({}, outputs)
    assert result["n"] is None
    assert result["withheld_by"] == ["b"]
    assert result["nodes"] == {"included": ["a", "e"], "excluded": {"b": "blocked"}}


def test_count_withheld_by_an_included_node_is_null_not_a_partial_sum() -> None:
    result = COUNT.combine({}, {"a": out({"n": 20}), "b": out({"n": None}, Outcome.SUPPRESSED)})
    assert result["n"] is None
    assert result["withheld_by"] == ["b"]
    assert 20 not in [result["n"]]


def test_count_with_no_node_included_is_null() -> None:
    result = COUNT.combine({}, {"a": out({"n": None}, Outcome.BLOCKED)})
    assert result["n"] is None
    assert result["nodes"] == {"included": [], "excluded": {"a": "blocked"}}


def test_crosstab_unions_labels_and_nulls_cells_a_node_withheld() -> None:
    params = {"rows": "sex", "columns": "smoking"}
    a = {
        "rows": "sex",
        "columns": "smoking",
        "cells": [["F", "never", 40], ["F", "current", None], ["M", "never", 35]],
    }
    b = {
        "rows": "sex",
        "columns": "smoking",
        "cells": [["F", "never", 10], ["F", "current", 25], [None, "never", 15]],
    }
    failed = NodeOutput(Outcome.FAILED, {}, error="timed out")
    result = CROSSTAB.combine(params, {"b": out(b), "a": out(a, Outcome.SUPPRESSED), "c": failed})
    cells = {(r, c): n for r, c, n in result["cells"]}
    assert cells == {
        ("F", "never"): 50,
        ("F", "current"): None,  # b's 25 is not the pooled value: a withheld its part
        ("M", "never"): 35,  # absent at b (RELEASED): zero there
        # absent at a, which is SUPPRESSED and so may have dropped the NULL level unsaid
        (None, "never"): None,
    }
    assert result["withheld"] == [["F", "current", ["a"]], [None, "never", ["a"]]]
    assert result["nodes"] == {"included": ["a", "b"], "excluded": {"c": "failed"}}
    assert 25 not in [n for _, _, n in result["cells"]]
    assert roundtrip(result) == result


def test_crosstab_cell_withheld_by_several_nodes_names_them_all() -> None:
    params = {"rows": "site"}
    cell = {"rows": "site", "columns": None, "cells": [["1", None, None], ["2", None, 10]]}
    result = CROSSTAB.combine(
        params, {"x": out(cell, Outcome.SUPPRESSED), "y": out(cell, Outcome.SUPPRESSED)}
    )
    assert result["cells"] == [["1", None, None], ["2", None, 20]]
    assert result["withheld"] == [["1", None, ["x", "y"]]]


def test_crosstab_with_a_blocked_node_has_every_cell_null_and_unknown_zeros() -> None:
    params = {"rows": "sex", "columns": "smoking"}
    a = {"rows": "sex", "columns": "smoking", "cells": [["F", "never", 40], ["M", "current", 15]]}
    blocked = {"rows": "sex", "columns": "smoking", "cells": []}

    result = CROSSTAB.combine(params, {"a": out(a), "z": out(blocked, Outcome.BLOCKED)})

    assert [n for _, _, n in result["cells"]] == [None, None]
    assert result["withheld"] == [["F", "never", ["z"]], ["M", "current", ["z"]]]
    frame = CROSSTAB.to_frame(params, result)
    assert frame.isna().all().all()  # F x current is not known to be 0: z's part is unknown


def test_summary_with_a_blocked_node_has_every_group_null() -> None:
    params = {"column": "bmi", "by": "sex"}
    a = {"column": "bmi", "by": "sex", "groups": [["F", 30, 25.0, 3.0], ["M", 12, 26.0, 2.0]]}
    blocked = {"column": "bmi", "by": "sex", "groups": []}

    result = SUMMARY.combine(params, {"a": out(a), "z": out(blocked, Outcome.BLOCKED)})

    assert result["groups"] == [["F", None, None, None], ["M", None, None, None]]
    assert result["withheld"] == [["F", ["z"]], ["M", ["z"]]]


def moments(x: np.ndarray) -> tuple[int, float, float | None]:
    return len(x), float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else None


def test_summary_pools_exactly_and_nulls_groups_a_node_withheld() -> None:
    rng = np.random.default_rng(11)
    a_f, b_f, b_m = rng.normal(25, 4, 30), rng.normal(28, 6, 55), rng.normal(27, 3, 41)
    one = np.array([31.0])
    params = {"column": "bmi", "by": "sex"}
    # a withheld its M group whole (label included) and says only that it suppressed
    a = {"column": "bmi", "by": "sex", "groups": [["F", *moments(a_f)]]}
    b = {
        "column": "bmi",
        "by": "sex",
        "groups": [["F", *moments(b_f)], ["M", *moments(b_m)], [None, *moments(one)]],
    }

    result = SUMMARY.combine(params, {"a": out(a, Outcome.SUPPRESSED), "b": out(b)})

    groups = {g: rest for g, *rest in result["groups"]}
    pooled_f = np.concatenate([a_f, b_f])
    assert groups["F"][0] == 85 and isinstance(groups["F"][0], int)
    assert groups["F"][1] == pytest.approx(np.mean(pooled_f), rel=1e-12)
    assert groups["F"][2] == pytest.approx(np.std(pooled_f, ddof=1), rel=1e-12)
    # a may hold a withheld group at any label it did not report: M, and the null level
    assert groups["M"] == [None, None, None]
    assert groups[None] == [None, None, None]
    assert result["withheld"] == [["M", ["a"]], [None, ["a"]]]
    assert roundtrip(result) == result

    # A released node withheld nothing: a group it does not report has n = 0 there
    released = SUMMARY.combine(params, {"a": out(a), "b": out(b)})
    assert {g: rest for g, *rest in released["groups"]}[None] == [1, 31.0, None]
    assert released["withheld"] == []


def test_summary_pooling_two_single_values_gives_an_sd() -> None:
    params = {"column": "bmi"}
    a = {"column": "bmi", "by": None, "groups": [[None, 1, 20.0, None]]}
    b = {"column": "bmi", "by": None, "groups": [[None, 1, 24.0, None]]}
    result = SUMMARY.combine(params, {"a": out(a), "b": out(b)})
    assert result["groups"] == [[None, 2, 22.0, pytest.approx(math.sqrt(8))]]


@pytest.mark.parametrize(
    ("analysis", "params", "payload", "fragment"),
    [
        (COUNT, {}, {}, "it has no 'n'"),
        (COUNT, {}, {"n": "12"}, "n is not a number"),
        (COUNT, {}, {"n": 1.5}, "n is not a whole number"),
        (COUNT, {}, {"n": -3}, "n is negative"),
        (CROSSTAB, {"rows": "a"}, {"cells": [["x", None]]}, "does not have 3 items"),
        (CROSSTAB, {"rows": "a"}, {"cells": [[1, None, 3]]}, "row label is not a string"),
        (CROSSTAB, {"rows": "a"}, {"cells": "x"}, "'cells' is not a list"),
        (SUMMARY, {"column": "a"}, {"groups": [[None, 3, "x", 1]]}, "group mean is not a number"),
    ],
)
def test_malformed_node_payload_is_refused_naming_the_node(analysis, params, payload, fragment):
    with pytest.raises(InvalidRequest) as err:
        analysis.combine(params, {"tre-7": NodeOutput(Outcome.RELEASED, payload)})
    assert "node 'tre-7'" in str(err.value) and fragment in str(err.value)
