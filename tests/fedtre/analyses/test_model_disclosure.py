"""Under the default policy the model rules block a node's regression output, at every GLM round.

Rules (fedtre.disclosure.models): residual degrees of freedom >= 10, parameters at most a
third of the records, every level of a binary outcome and of a categorical covariate in at
least `threshold` (10) records. A blocked output carries no payload at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import run_federated
from model_testkit import make_model_nodes, model_cohort, run_round_at_node, run_rounds

from fedtre.analyses import Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy

DEFAULT = DisclosurePolicy()
GOOD_N = 400


def failed_rules(output: Any) -> set[str]:
    return {r.rule for r in output.rules if not r.passed}


def pooled_with_small_node(small: pd.DataFrame) -> list[pd.DataFrame]:
    big = model_cohort(2 * GOOD_N, seed=99).dropna().reset_index(drop=True)
    return [big.iloc[:GOOD_N], big.iloc[GOOD_N:], small.reset_index(drop=True)]


def complete(n: int, seed: int = 3) -> pd.DataFrame:
    return model_cohort(3 * n, seed=seed).dropna().head(n).reset_index(drop=True)


# Each case: the small node's data, the model, and the one rule that fails there.
def _residual_df() -> tuple[pd.DataFrame, dict[str, Any]]:
    # 11 records, 2 parameters: 9 residual df (< 10), and 3 x 2 <= 11
    return complete(11), {"outcome": "visits", "family": "poisson", "covariates": ["age"]}


def _parameters() -> tuple[pd.DataFrame, dict[str, Any]]:
    # 17 records, 6 parameters: 11 residual df, but 3 x 6 = 18 > 17
    covariates = ["age", "bmi", "sbp", "log_years", "time"]
    return complete(17), {"outcome": "visits", "family": "poisson", "covariates": covariates}


def _outcome_level() -> tuple[pd.DataFrame, dict[str, Any]]:
    # 200 records, only 6 with the outcome
    data = complete(400)
    small = pd.concat([data[data.diabetic].head(6), data[~data.diabetic].head(194)])
    return small, {"outcome": "diabetic", "family": "binomial", "covariates": ["age"]}


def _covariate_level() -> tuple[pd.DataFrame, dict[str, Any]]:
    # 200 records, outcome levels fine, but only 4 current smokers
    data = complete(600, seed=4)
    small = pd.concat([data[data.smoking == "current"].head(4), data[data.smoking != "current"]])
    small = small.head(200)
    assert (small.smoking == "current").sum() == 4
    return small, {"outcome": "visits", "family": "poisson", "covariates": ["age", "smoking"]}


CASES = {
    "residual_df": _residual_df,
    "parameters": _parameters,
    "level_counts (binary outcome)": _outcome_level,
    "level_counts (categorical covariate)": _covariate_level,
}


@pytest.mark.parametrize("case", list(CASES))
def test_glm_round_one_is_blocked_before_anything_leaves(tmp_path, case: str) -> None:
    # Given two large nodes and one small node failing exactly one model rule
    small, params = CASES[case]()
    nodes = make_model_nodes(tmp_path, pooled_with_small_node(small))

    # When the GLM starts under the default policy
    run = run_rounds(get_analysis("glm"), params, nodes, DEFAULT)

    # Then the small node blocks round 1 with nothing in its payload, and the fit stops
    assert run.result is None
    assert len(run.rounds) == 1
    small_out = run.rounds[0]["tre-2"]
    assert small_out.outcome is Outcome.BLOCKED
    assert small_out.payload == {}
    # (a node of very few records also has records of high leverage)
    assert case.split(" ")[0] in failed_rules(small_out)
    assert failed_rules(small_out) <= {case.split(" ")[0], "leverage"}
    assert {run.rounds[0][n].outcome for n in ("tre-0", "tre-1")} == {Outcome.RELEASED}


@pytest.mark.parametrize("case", list(CASES))
def test_every_later_glm_round_is_checked_too(tmp_path, case: str) -> None:
    # Given the round parameters of a real fit over the two large nodes
    small, params = CASES[case]()
    parts = pooled_with_small_node(small)
    nodes = make_model_nodes(tmp_path, parts)
    good = {n: nodes[n] for n in ("tre-0", "tre-1")}
    analysis = get_analysis("glm")
    run = run_rounds(analysis, params, good, DEFAULT)
    assert run.result is not None and len(run.rounds) >= 3
    validated = analysis.validate(params)
    state = analysis.initial_state(validated)
    round_params = [analysis.round_params(validated, state)]
    for outputs in run.rounds[:-1]:
        state = analysis.advance(validated, state, outputs).state
        round_params.append(analysis.round_params(validated, state))

    # When the small node is given each of those rounds
    outputs = [
        run_round_at_node(analysis, params, r, nodes["tre-2"], DEFAULT) for r in round_params
    ]

    # Then every round is blocked at the node with nothing released
    assert len(outputs) == len(run.rounds)
    for output in outputs:
        assert output.outcome is Outcome.BLOCKED
        assert output.payload == {}
        assert case.split(" ")[0] in failed_rules(output)
        assert failed_rules(output) <= {case.split(" ")[0], "leverage"}


def test_glm_round_two_is_not_blocked_for_a_level_the_node_lacks(tmp_path) -> None:
    # Given a node without current smokers (it said so in round 1 by not listing them)
    data = complete(900, seed=6)
    parts = [
        data[data.smoking != "current"].head(300),
        data.iloc[:400],
        data.iloc[400:800],
    ]
    nodes = make_model_nodes(tmp_path, [p.reset_index(drop=True) for p in parts])
    params = {"outcome": "visits", "family": "poisson", "covariates": ["age", "smoking"]}

    # When the fit runs under the default policy (zeros disclosive)
    run = run_rounds(get_analysis("glm"), params, nodes, DEFAULT)

    # Then no round is blocked: an absent level is not a zero cell of that node
    assert run.result is not None
    assert run.result["terms"] == ["Intercept", "smoking[T.former]", "smoking[T.never]", "age"]
    assert all(o.outcome is Outcome.RELEASED for r in run.rounds for o in r.values())


@pytest.mark.parametrize(
    "case", ["residual_df", "parameters", "level_counts (categorical covariate)"]
)
def test_linear_regression_is_withheld_when_a_node_blocks(tmp_path, case: str) -> None:
    small, params = CASES[case]()
    nodes = make_model_nodes(tmp_path, pooled_with_small_node(small))
    ols = {"outcome": "sbp", "covariates": params["covariates"]}
    if "sbp" in ols["covariates"]:
        ols["covariates"] = [c if c != "sbp" else "visits" for c in ols["covariates"]]

    result = run_federated(get_analysis("linear_regression"), ols, nodes, DEFAULT)

    # the blocked node's part is unknown, so no coefficient is presented as pooled
    assert result["withheld_by"] == ["tre-2"]
    assert result["coef"] == [] and result["std_err"] == [] and result["model"] is None
    assert result["nodes"]["excluded"] == {"tre-2": "blocked"}


def test_default_policy_releases_a_healthy_model(tmp_path) -> None:
    data = complete(900, seed=8)
    nodes = make_model_nodes(tmp_path, [data.iloc[:500], data.iloc[500:]])

    ols = run_federated(
        get_analysis("linear_regression"),
        {"outcome": "sbp", "covariates": ["age", "smoking"]},
        nodes,
        DEFAULT,
    )
    glm = run_rounds(
        get_analysis("glm"),
        {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "sex"]},
        nodes,
        DEFAULT,
    )

    assert len(ols["coef"]) == 4 and np.all(np.isfinite(ols["coef"]))
    assert glm.result is not None and glm.result["model"]["converged"] is True
