"""Attack class 5: dominance in models.

The target's income dominates every total it is part of (2e8 against about 18e6 for the
other 599 people together). The attacker knows everyone else earns 20,000 to 40,000 a
year, so any released mean or total of income, times n, less (n - 1) x 30,000, gives
the target's income to within a few per cent.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fedtre.analyses import Outcome

from .conftest import Factory, numbers, unique_targets

TARGET_INCOME = 2e8
TYPICAL = 30_000.0


@pytest.fixture(scope="module")
def rich(frame: pd.DataFrame) -> pd.DataFrame:
    world = frame.copy()
    world.loc[unique_targets(world)[0], "income"] = TARGET_INCOME
    return world


def estimate_close(mean: float | None, n: float | None) -> bool:
    """True when the attacker's estimate from a released mean and n is within 10%."""
    if mean is None or n is None:
        return False
    estimate = mean * n - (n - 1) * TYPICAL
    return abs(estimate - TARGET_INCOME) <= 0.1 * TARGET_INCOME


def released(output: Any) -> bool:
    return output.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED)


def test_summary_of_a_dominated_total_is_withheld(factory: Factory, rich: pd.DataFrame) -> None:
    """summary(income), overall and by sex.

    Nothing learned: the target's group has no released mean (withheld or blocked), so
    no mean x n estimates the target's income within 10%.
    """
    agent = factory.agent(factory.source(rich))
    for by in (None, "sex"):
        params = {"column": "income"} if by is None else {"column": "income", "by": by}
        out = agent.ask("summary", **params)
        for group in out.payload.get("groups", []) if released(out) else []:
            assert not estimate_close(group[2], group[1]), group


@pytest.mark.parametrize(
    "params",
    [
        {"outcome": "income", "covariates": []},
        {"outcome": "income", "covariates": ["age"]},
        {"outcome": "sbp", "covariates": ["income"]},
    ],
    ids=["outcome-only", "outcome", "covariate"],
)
def test_linear_regression_on_a_dominated_column_is_blocked(
    factory: Factory, rich: pd.DataFrame, params: dict[str, Any]
) -> None:
    """linear_regression with the dominated column as outcome (with and without
    covariates) or as a numeric covariate.

    Nothing learned: the node output is blocked (the dominance family fails), so no
    coefficient, mean or n about the dominated column is released.
    """
    agent = factory.agent(factory.source(rich))
    out = agent.ask("linear_regression", **params)
    assert out.outcome is Outcome.BLOCKED
    assert {r.rule for r in out.rules} & {"nk_dominance", "p_percent"}
    result = agent.combined("linear_regression", "p2", **params)
    assert not result.get("coef"), result
    assert not any(abs(x) > 1e6 for x in numbers(result))


def test_correlation_and_glm_on_a_dominated_column_are_blocked(
    factory: Factory, rich: pd.DataFrame
) -> None:
    """correlation of income with age; a Poisson GLM of visits on income.

    Nothing learned: both are blocked; no released number is of the size of the
    target's income (nothing above 1e6 anywhere the researcher receives).
    """
    agent = factory.agent(factory.source(rich))
    corr = agent.ask("correlation", columns=["income", "age"])
    assert corr.outcome is Outcome.BLOCKED
    rounds, result = agent.fit_rounds(
        "glm", outcome="visits", family="poisson", covariates=["income"]
    )
    assert rounds[0].outcome is Outcome.BLOCKED and result is None
    for view in (corr, *rounds):
        assert not any(abs(x) > 1e6 for x in numbers(view.payload))


def test_a_covariate_that_singles_out_the_target_does_not_give_their_income(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The dummy-covariate attack: a cohort where a numeric covariate is constant for
    everyone but the target (filter: visits == v, or the target's quasi-identifiers, the
    target having other visits). The regression income ~ visits then passes through the
    target's point: intercept + slope x target's visits = target's income, exactly.

    Nothing learned: the model is blocked (the target's leverage is 1, above 1/threshold),
    so no coefficient is released, and what the researcher sees names only rule families.
    """
    from .conftest import qi_filter, unique_targets

    target = unique_targets(frame)[0]
    visits = int(frame.loc[target, "visits"])
    other = (visits + 3) % 12
    cohort = {"or": [{"col": "visits", "op": "==", "value": other}, qi_filter(frame, target)]}
    agent = factory.agent(factory.source(frame))

    out = agent.ask("linear_regression", outcome="income", covariates=["visits"], filter=cohort)
    result = agent.combined(
        "linear_regression", "p2", outcome="income", covariates=["visits"], filter=cohort
    )

    assert out.outcome is Outcome.BLOCKED and out.payload == {}
    assert "leverage" in {r.rule for r in out.rules}
    coef = result.get("coef") or []
    truth = float(frame.loc[target, "income"])
    assert not coef or abs(coef[0] + coef[1] * visits - truth) > 1000
