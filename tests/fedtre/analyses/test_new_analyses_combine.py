"""The newer analyses' parameters, frames, and combination when a node blocks, refuses or fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import EXACT, run_federated, run_node
from model_testkit import make_model_nodes, model_cohort

from fedtre.analyses import NodeOutput, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):
    pooled = model_cohort(700, seed=23)
    parts = [pooled.iloc[:300], pooled.iloc[300:650], pooled.iloc[650:]]
    made = make_model_nodes(
        tmp_path_factory.mktemp("combine"), [p.reset_index(drop=True) for p in parts]
    )
    yield pooled, parts, made
    for source in made.values():
        source.engine.dispose()


# -- parameters -------------------------------------------------------------------------------

INVALID = [
    ("histogram", {"column": "bmi"}, "either 'edges' or 'width'"),
    ("histogram", {"column": "bmi", "edges": [1, 2], "width": 1}, "either 'edges' or 'width'"),
    ("histogram", {"column": "bmi", "edges": [1, 3, 2]}, "strictly increasing"),
    ("histogram", {"column": "bmi", "width": 0}, "positive number"),
    ("quantiles", {"column": "bmi", "width": 0.1, "probs": [0.5, 1.0]}, "strictly between 0 and 1"),
    ("quantiles", {"column": "bmi"}, "'width'"),
    ("correlation", {"columns": ["bmi"]}, "2 to 50"),
    ("correlation", {"columns": ["bmi", "bmi"]}, "twice"),
    ("linear_regression", {"covariates": ["age"]}, "'outcome'"),
    ("linear_regression", {"outcome": "sbp", "covariates": "age"}, "must be a list"),
    ("linear_regression", {"outcome": "sbp", "covariates": ["sbp"]}, "also a covariate"),
    ("linear_regression", {"outcome": "sbp", "covariates": ["age; drop"]}, "C(name)"),
    ("glm", {"outcome": "diabetic", "family": "gamma"}, "'family' must be one of"),
    ("glm", {"outcome": "diabetic", "family": "binomial", "max_iter": 1}, "'max_iter'"),
    ("glm", {"outcome": "diabetic", "family": "binomial", "tol": 0}, "'tol'"),
    ("glm", {"outcome": "visits", "family": "poisson", "offset": "visits"}, "also a covariate or"),
    ("kaplan_meier", {"time": "time", "event": "time"}, "different columns"),
    ("kaplan_meier", {"time": "time"}, "needs the parameter"),
]


@pytest.mark.parametrize(("name", "params", "fragment"), INVALID)
def test_invalid_parameters_say_what_is_wrong(
    name: str, params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        get_analysis(name).validate(params)
    assert fragment in str(caught.value)


SCHEMA_PROBLEMS = [
    ("histogram", {"column": "sex", "width": 1}, "must be float or integer"),
    ("correlation", {"columns": ["age", "smoking"]}, "must be float or integer"),
    ("linear_regression", {"outcome": "sex", "covariates": ["age"]}, "outcome column 'sex'"),
    ("linear_regression", {"outcome": "sbp", "covariates": ["C(bmi)"]}, "C() takes"),
    ("glm", {"outcome": "bmi", "family": "binomial"}, "must be boolean or integer"),
    ("kaplan_meier", {"time": "time", "event": "died", "by": "bmi"}, "by column 'bmi'"),
    ("kaplan_meier", {"time": "time", "event": "nowhere"}, "not declared"),
]


@pytest.mark.parametrize(("name", "params", "fragment"), SCHEMA_PROBLEMS)
def test_schema_problems_name_the_column(nodes, name, params, fragment) -> None:
    _, _, made = nodes
    analysis = get_analysis(name)
    problems = analysis.schema_problems(analysis.validate(params), made["tre-0"].schema)
    assert any(fragment in p for p in problems), problems


# -- nodes that do not release ----------------------------------------------------------------

CASES: dict[str, dict[str, Any]] = {
    "histogram": {"column": "bmi", "edges": [10, 20, 25, 30, 50]},
    "correlation": {"columns": ["age", "bmi", "sbp"]},
    "quantiles": {"column": "bmi", "width": 0.5},
    "linear_regression": {"outcome": "sbp", "covariates": ["age", "smoking"]},
    "kaplan_meier": {"time": "time", "event": "died", "by": "sex"},
}


def gridded(made):
    """The nodes, declaring grids for bmi and time (bounds are released on them only)."""
    import dataclasses

    return {
        node: dataclasses.replace(
            source, schema=dataclasses.replace(source.schema, grids={"bmi": 0.1, "time": 0.25})
        )
        for node, source in made.items()
    }


def outputs_with(
    made, name: str, params: dict[str, Any], odd: NodeOutput | None
) -> dict[str, NodeOutput]:
    analysis = get_analysis(name)
    made = gridded(made)
    outputs = {n: run_node(analysis, params, s, EXACT) for n, s in made.items() if n != "tre-2"}
    if odd is None:
        outputs["tre-2"] = run_node(
            analysis, params, made["tre-2"], DisclosurePolicy(threshold=200)
        )
    else:
        outputs["tre-2"] = odd
    return outputs


@pytest.mark.parametrize("name", list(CASES))
def test_a_blocked_node_withholds_its_part_of_every_value(nodes, name: str) -> None:
    # Given a node whose strict policy (threshold 200 for its 50 records) blocks its output
    _, _, made = nodes
    outputs = outputs_with(made, name, CASES[name], None)
    assert outputs["tre-2"].outcome is Outcome.BLOCKED
    assert outputs["tre-2"].payload == {}

    # When the coordinator combines
    analysis = get_analysis(name)
    result = analysis.combine(analysis.validate(CASES[name]), outputs)

    # Then no combined value presents the other nodes' sum as pooled
    assert result["nodes"]["excluded"] == {"tre-2": "blocked"}
    if name == "histogram":
        assert all(n is None for _, _, n in result["bins"])
        assert all(nodes_ == ["tre-2"] for _, _, nodes_ in result["withheld"])
    elif name in ("correlation", "linear_regression"):
        assert result["withheld_by"] == ["tre-2"]
        assert result.get("matrix") is None and not result.get("coef")
    elif name == "quantiles":
        assert result["n"] is None
        assert all(q[1:] == [None, None, None] for q in result["quantiles"])
    else:
        assert all(curve is None for _, curve in result["groups"])
        assert result["logrank"] is None


@pytest.mark.parametrize("outcome", [Outcome.REFUSED, Outcome.FAILED])
@pytest.mark.parametrize("name", ["histogram", "correlation", "linear_regression"])
def test_refused_or_failed_nodes_are_left_out(nodes, name: str, outcome: Outcome) -> None:
    # Given one node that refused the task or failed
    pooled, parts, made = nodes
    outputs = outputs_with(made, name, CASES[name], NodeOutput(outcome, {}, error="no"))
    analysis = get_analysis(name)

    result = analysis.combine(analysis.validate(CASES[name]), outputs)

    # Then the result is over the other nodes, and says so
    others = pd.concat(parts[:2])
    assert result["nodes"] == {
        "included": ["tre-0", "tre-1"],
        "excluded": {"tre-2": outcome.value},
    }
    if name == "histogram":
        # the open bins hold everything within the edges: the total is the pooled one
        # (each of the two nodes' bins within the noise bound of its count)
        total = np.histogram(others.bmi.dropna(), CASES[name]["edges"])[0].sum()
        noisy = EXACT.perturbation == "cell_key"
        slack = 2 * EXACT.noise_deviation * len(result["bins"]) if noisy else 0
        assert abs(sum(n for _, _, n in result["bins"]) - total) <= slack
    elif name == "correlation":
        expected = np.corrcoef(others[["age", "bmi", "sbp"]].dropna().to_numpy().T)
        assert np.allclose(result["matrix"], expected, rtol=1e-12)
    else:
        # n is the sum of the two nodes' released n (each within the noise bound)
        noisy = EXACT.perturbation == "cell_key"
        slack = 2 * EXACT.noise_deviation if noisy else 0
        assert abs(result["model"]["n"] - len(others.dropna(subset=["sbp", "age"]))) <= slack


# -- frames -----------------------------------------------------------------------------------


def test_histogram_frame_is_indexed_by_intervals(nodes) -> None:
    _, _, made = nodes
    params = {"column": "bmi", "width": 5, "origin": 0}
    result = run_federated(get_analysis("histogram"), params, gridded(made))

    frame = get_analysis("histogram").to_frame(params, result)

    assert frame.index.name == "bmi"
    # the open ends run from -inf and to +inf: no edge wraps the data
    assert frame.index.left[0] == -np.inf and frame.index.right[-1] == np.inf
    assert list(frame.index.left[1:]) == [lo for lo, _, _ in result["bins"][1:]]
    assert frame.n.dtype == "Int64"
    assert frame.n.tolist() == [n for _, _, n in result["bins"]]


def test_quantiles_and_correlation_frames(nodes) -> None:
    _, _, made = nodes
    q_params = {"column": "bmi", "width": 0.1, "probs": [0.1, 0.5]}
    quantiles = run_federated(get_analysis("quantiles"), q_params, gridded(made))
    c_params = {"columns": ["age", "bmi"]}
    correlation = run_federated(get_analysis("correlation"), c_params, made)

    q = get_analysis("quantiles").to_frame(q_params, quantiles)
    c = get_analysis("correlation").to_frame(c_params, correlation)

    assert list(q.index) == [0.1, 0.5] and list(q.columns) == ["value", "lower", "upper"]
    assert (q.lower <= q.value).all() and (q.value <= q.upper).all()
    assert list(c.index) == ["age", "bmi"] and list(c.columns) == ["age", "bmi"]
    assert c.attrs["n"] == correlation["n"]
    assert c.loc["age", "bmi"] == correlation["matrix"][0][1]


def test_regression_frames_of_a_withheld_model_are_empty(nodes) -> None:
    _, _, made = nodes
    params = CASES["linear_regression"]
    outputs = outputs_with(made, "linear_regression", params, None)
    analysis = get_analysis("linear_regression")
    result = analysis.combine(analysis.validate(params), outputs)

    frame = analysis.to_frame(params, result)

    assert frame.empty
    assert list(frame.columns) == ["coef", "std_err", "t", "p_value", "ci_lower", "ci_upper"]
