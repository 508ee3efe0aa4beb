"""linear_regression and glm through the release stage (issue 13, items 2, 3, 5 and 9).

- dominance: a model whose outcome or numeric covariate is dominated by one or two
  records is blocked at the node (NK and p% rules on absolute values), in every GLM round;
- n: the released n is the release stage's count (near the true n, the same on every
  run and every round); the exact statistics are MODEL values the researcher never sees;
- every payload passes release.seal against the analysis's released_fields;
- a blocked output names no level and holds nothing, in what the researcher receives;
- the issue's attack (linear_regression on a column whose total one person dominates,
  reading their value off n x mean) no longer learns the value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import numbers_in, roundtrip, run_federated, run_node
from model_testkit import make_model_nodes, model_cohort, run_rounds

from fedtre.analyses import NodeOutput, Outcome, get_analysis
from fedtre.analyses.iterative import with_round
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.disclosure.release import Kind

DEFAULT = DisclosurePolicy()
TARGET_VALUE = 2_500_000.0


def complete(n: int, seed: int) -> pd.DataFrame:
    return model_cohort(2 * n, seed=seed).dropna().head(n).reset_index(drop=True)


def failed(output: NodeOutput) -> set[str]:
    return {r.rule for r in output.rules if not r.passed}


def sealed(analysis: Any, output: NodeOutput) -> dict[str, Any]:
    fields = {path: Kind(kind) for path, kind in analysis.released_fields.items()}
    return release.seal(analysis.name, output.payload, fields)


def at_node(
    name: str,
    params: Mapping[str, Any],
    source: Any,
    policy: DisclosurePolicy,
    round_params: Mapping[str, Any] | None = None,
) -> NodeOutput:
    """What the agent's executor holds before sealing: check(compute()), no wire."""
    analysis = get_analysis(name)
    p = analysis.validate(roundtrip(params))
    if round_params is not None:
        p = with_round(analysis, p, round_params)
    return analysis.check(p, analysis.compute(p, source), policy)


def researcher_sees(name: str, output: NodeOutput) -> NodeOutput:
    """A node's output as the researcher receives it: public rules, no model statistics."""
    public = release.public_output(output)
    return dataclasses.replace(public, payload=release.researcher_view(name, public.payload))


@pytest.fixture
def healthy(tmp_path):
    data = complete(700, seed=21)
    return data, make_model_nodes(tmp_path, [data.iloc[:400], data.iloc[400:]])


# -- dominance ----------------------------------------------------------------------------


def with_dominant(data: pd.DataFrame, column: str, value: float) -> pd.DataFrame:
    data = data.copy()
    data.loc[0, column] = value
    return data


OLS_DOMINATED = {
    "outcome": ("sbp", {"outcome": "sbp", "covariates": ["age", "smoking"]}),
    "numeric covariate": ("bmi", {"outcome": "sbp", "covariates": ["age", "bmi", "sex"]}),
    # a signed covariate: judged on absolute values, so no review and no escape
    "negative covariate": ("log_years", {"outcome": "sbp", "covariates": ["log_years"]}),
}


@pytest.mark.parametrize("case", list(OLS_DOMINATED))
def test_linear_regression_with_a_dominated_column_is_blocked(tmp_path, case: str) -> None:
    # Given one node where one record dominates the total of a model column
    column, params = OLS_DOMINATED[case]
    value = -TARGET_VALUE if case == "negative covariate" else TARGET_VALUE
    data = complete(600, seed=22)
    parts = [data.iloc[:300], with_dominant(data.iloc[300:].reset_index(drop=True), column, value)]
    nodes = make_model_nodes(tmp_path, parts)

    # When the regression runs under the default policy
    result = run_federated(get_analysis("linear_regression"), params, nodes, DEFAULT)

    # Then that node blocks (NK and p% fail) and no coefficient is combined
    out = run_node(get_analysis("linear_regression"), params, nodes["tre-1"], DEFAULT)
    assert out.outcome is Outcome.BLOCKED and out.payload == {}
    # (one record's extreme value also gives it high leverage)
    assert failed(out) - {"leverage"} == {"nk_dominance", "p_percent"}
    assert result["withheld_by"] == ["tre-1"]
    assert result["coef"] == [] and result["model"] is None
    # and the other node's dominance rules passed
    other = run_node(get_analysis("linear_regression"), params, nodes["tre-0"], DEFAULT)
    assert other.outcome is Outcome.RELEASED
    assert {"nk_dominance", "p_percent"} <= {r.rule for r in other.rules if r.passed}


GLM_DOMINATED = {
    "poisson outcome": (
        "visits",
        {"outcome": "visits", "family": "poisson", "covariates": ["age"]},
    ),
    "numeric covariate": (
        "bmi",
        {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "bmi"]},
    ),
}


@pytest.mark.parametrize("case", list(GLM_DOMINATED))
def test_glm_with_a_dominated_column_is_blocked_in_every_round(tmp_path, case: str) -> None:
    column, params = GLM_DOMINATED[case]
    data = complete(900, seed=23)
    small = with_dominant(data.iloc[600:].reset_index(drop=True), column, 1e6)
    nodes = make_model_nodes(tmp_path, [data.iloc[:300], data.iloc[300:600], small])
    analysis = get_analysis("glm")

    # Round 1 is blocked at the dominated node, and the fit stops there
    run = run_rounds(analysis, params, nodes, DEFAULT)
    assert run.result is None and len(run.rounds) == 1
    assert run.rounds[0]["tre-2"].outcome is Outcome.BLOCKED
    assert run.rounds[0]["tre-2"].payload == {}
    assert failed(run.rounds[0]["tre-2"]) - {"leverage"} == {"nk_dominance", "p_percent"}

    # and so is every later round of a fit the other nodes carry
    good = {n: nodes[n] for n in ("tre-0", "tre-1")}
    fit = run_rounds(analysis, params, good, DEFAULT)
    assert fit.result is not None and len(fit.rounds) >= 3
    validated = analysis.validate(params)
    state = analysis.initial_state(validated)
    for outputs in fit.rounds[:-1]:
        state = analysis.advance(validated, state, outputs).state
        out = at_node(
            "glm", params, nodes["tre-2"], DEFAULT, analysis.round_params(validated, state)
        )
        assert out.outcome is Outcome.BLOCKED and out.payload == {}
        # (one record's extreme value also gives it high leverage)
    assert failed(out) - {"leverage"} == {"nk_dominance", "p_percent"}


# -- the released n -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("linear_regression", {"outcome": "sbp", "covariates": ["age", "smoking"]}),
        ("glm", {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "sex"]}),
    ],
)
def test_the_released_n_is_near_the_true_n_and_the_same_on_every_run(
    healthy, name: str, params: dict[str, Any]
) -> None:
    data, nodes = healthy
    true_n = {"tre-0": 400, "tre-1": 300}

    outputs = [at_node(name, params, nodes[node], DEFAULT) for node in nodes for _ in range(2)]

    for i, node in enumerate(nodes):
        first, second = outputs[2 * i], outputs[2 * i + 1]
        assert first.outcome is Outcome.RELEASED
        n = sealed(get_analysis(name), first)["n"]
        assert abs(n - true_n[node]) <= DEFAULT.noise_deviation
        assert n == second.payload["n"]
        assert "perturbation" in {r.rule for r in first.rules if r.passed}


def test_the_released_n_is_rounded_under_a_rounding_policy(healthy) -> None:
    data, nodes = healthy
    rounding = DisclosurePolicy(perturbation="rounding", rounding_base=5)
    params = {"outcome": "sbp", "covariates": ["age"]}

    out = at_node("linear_regression", params, nodes["tre-1"], rounding)

    assert out.payload["n"] == 300 and out.payload["n_model"] == 300
    assert "rounding" in {r.rule for r in out.rules if r.passed}


# -- what leaves --------------------------------------------------------------------------


def test_every_payload_is_sealed_and_the_researcher_sees_no_model_statistics(healthy) -> None:
    data, nodes = healthy
    ols = at_node(
        "linear_regression",
        {"outcome": "sbp", "covariates": ["age", "smoking"]},
        nodes["tre-0"],
        DEFAULT,
    )
    payload = sealed(get_analysis("linear_regression"), ols)
    assert set(payload) == {"n", "n_model", "covariates", "basis", "means", "cross"}
    seen = researcher_sees("linear_regression", dataclasses.replace(ols, payload=payload))
    assert set(seen.payload) == {"n", "covariates", "basis"}

    params = {"outcome": "visits", "family": "poisson", "covariates": ["age", "smoking"]}
    glm = get_analysis("glm")
    run = run_rounds(glm, params, nodes, DEFAULT)
    assert run.result is not None
    validated = glm.validate(params)
    state = glm.initial_state(validated)
    for outputs in run.rounds:
        out = at_node("glm", params, nodes["tre-1"], DEFAULT, glm.round_params(validated, state))
        payload = sealed(glm, out)
        assert payload["finite"] == 1.0
        seen = researcher_sees("glm", dataclasses.replace(out, payload=payload))
        assert set(seen.payload) == {"n", "covariates", "basis"}
        state = glm.advance(validated, state, outputs).state


def test_a_blocked_model_names_no_level_in_what_the_researcher_receives(tmp_path) -> None:
    # Given a node where 3 records have smoking = "ZZ9"
    data = complete(600, seed=24)
    small = data.iloc[300:].reset_index(drop=True)
    small.loc[:2, "smoking"] = "ZZ9"
    nodes = make_model_nodes(tmp_path, [data.iloc[:300], small])
    for name, params in [
        ("linear_regression", {"outcome": "sbp", "covariates": ["age", "smoking"]}),
        ("glm", {"outcome": "visits", "family": "poisson", "covariates": ["age", "smoking"]}),
    ]:
        out = at_node(name, params, nodes["tre-1"], DEFAULT)
        assert out.outcome is Outcome.BLOCKED and out.payload == {}
        # the agent's own record names the level (for the TRE's output checker)
        assert any("ZZ9" in r.detail for r in out.rules)

        seen = researcher_sees(name, out)

        assert seen.payload == {}
        text = repr((seen.error, [(r.rule, r.passed, r.detail) for r in seen.rules]))
        assert "ZZ9" not in text and "3" not in text
        assert {r.rule for r in seen.rules} <= {"level_counts", "leverage"}
        assert "level_counts" in {r.rule for r in seen.rules}


# -- the attack ---------------------------------------------------------------------


def test_a_dominated_column_through_linear_regression_no_longer_gives_the_value(tmp_path) -> None:
    """Issue 13, class 5: summary withholds a total one person dominates, but
    linear_regression on that column released its exact n and mean, and mean x n minus
    the others' small values is that person's value.

    Criterion: nothing the researcher receives (combined result, each node's public
    output) holds a number within 50% of the target's value or its n x mean.
    """
    data = complete(400, seed=25)
    data["sbp"] = 120.0  # everyone else: a value the attacker can guess
    data.loc[0, "sbp"] = TARGET_VALUE  # the target
    nodes = make_model_nodes(tmp_path, [data])
    params = {"outcome": "sbp", "covariates": []}

    analysis = get_analysis("linear_regression")
    out = at_node("linear_regression", params, nodes["tre-0"], DEFAULT)
    combined = analysis.combine(analysis.validate(params), {"tre-0": release.public_output(out)})
    seen = researcher_sees("linear_regression", out)

    assert out.outcome is Outcome.BLOCKED
    assert seen.payload == {}
    assert combined["coef"] == [] and combined["model"] is None
    released = numbers_in(combined) + numbers_in(seen.payload)
    for guess in released:
        assert not (0.5 * TARGET_VALUE <= abs(guess) <= 1.5 * TARGET_VALUE)
        assert not (0.5 * TARGET_VALUE <= abs(guess) * 400 <= 1.5 * TARGET_VALUE)
    # the model is withheld for dominance (and, having no numeric covariate, as a table),
    # and says only that in fixed words
    assert {r.rule for r in seen.rules} == {"nk_dominance", "p_percent", "table_model"}


def test_the_engine_computes_the_largest_leverage_of_the_design(tmp_path) -> None:
    # Given records with an intercept, a numeric covariate and a three-level categorical
    import sqlalchemy as sa

    from fedtre.analyses.design import max_leverage

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 60), "g": rng.choice(["a", "b", "c"], 60)})
    frame.loc[0, "x"] = 9.0  # one record far from the others
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'lev.sqlite'}")
    frame.to_sql("t", engine, index=False)
    t = sa.table("t", sa.column("x"), sa.column("g"))
    columns = [t.c.x, *(sa.case((t.c.g == level, 1.0), else_=0.0) for level in "abc")]

    # When the engine computes the largest leverage (reference level included: the
    # pseudo-inverse makes that harmless)
    with engine.connect() as conn:
        found = max_leverage(conn, columns, [], n=len(frame))

    # Then it is the largest diagonal entry of the hat matrix of the pooled design
    design = np.column_stack([np.ones(len(frame)), frame.x, frame.g == "b", frame.g == "c"]).astype(
        float
    )
    hat = design @ np.linalg.pinv(design.T @ design) @ design.T
    assert found == pytest.approx(float(np.diag(hat).max()), rel=1e-9)
