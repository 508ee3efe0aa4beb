"""Attack class 3: exact counts alongside perturbed ones.

A perturbed count protects nothing if another output of the same records gives the
exact n: then pairs and chains of cohorts give exact arithmetic again. The attacker
collects every n-like figure, and tries to read n back from exact means (mean x n is a
whole number for an integer column only at the true n).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedtre.analyses import Outcome

from .conftest import Agent, Factory, count_of

# Cohorts far apart (each step of 3 years of age holds about 25 people).
CUTS = list(range(24, 78, 4))
D = 3  # the default policy's largest noise


def cohort(cut: int) -> dict[str, Any]:
    return {"col": "age", "op": ">=", "value": cut}


def true_n(frame: pd.DataFrame, cut: int) -> int:
    return int((frame["age"] >= cut).sum())


def released(output: Any) -> bool:
    return output.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED)


def recover_n(value: float, scale: Callable[[int], float], guess: int) -> int:
    """The attacker's rule: the n within the noise of `guess` for which scale(n) x value
    is closest to a whole number (true for an exact mean of an integer column)."""

    def off(n: int) -> float:
        x = scale(n) * value
        return abs(x - round(x))

    return min(range(max(guess - D, 1), guess + D + 1), key=off)


def test_every_n_of_a_cohort_is_the_same_perturbed_value(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """For 7 cohorts: the count's n, the summary's n, the quantiles' n, the Kaplan-Meier
    number at risk at the start, the regression's and the GLM's n and df_resid + params.

    Nothing learned: each of these figures is either withheld or equal to the count's
    released n (one perturbed value per set of records), so where the count is perturbed
    no analysis gives the exact n; and the count is perturbed (differs from the true n)
    for at least a third of the cohorts.
    """
    agent = factory.agent(factory.source(frame))
    perturbed = 0
    for cut in CUTS[::2]:
        f = cohort(cut)
        n = count_of(agent.ask("count", filter=f))
        assert n is not None
        perturbed += n != true_n(frame, cut)
        figures: dict[str, Any] = {}
        s = agent.ask("summary", column="visits", filter=f)
        if released(s):
            figures["summary"] = s.payload["groups"][0][1]
        q = agent.ask("quantiles", column="sbp", width=5, filter=f)
        if released(q):
            figures["quantiles"] = q.payload["n"]
        km = agent.ask("kaplan_meier", time="time", event="event", filter=f)
        if released(km):
            figures["km at risk"] = km.payload["groups"][0][1][0][2]
        lr = agent.combined("linear_regression", outcome="sbp", covariates=["age"], filter=f)
        _, glm = agent.fit_rounds(
            "glm", outcome="event", family="binomial", covariates=["age"], filter=f
        )
        for name, result in (("regression", lr), ("glm", glm or {})):
            model = result.get("model") or {}
            figures[f"{name} n"] = model.get("n")
            if model.get("df_resid") is not None:
                figures[f"{name} df"] = model["df_resid"] + model["df_model"] + 1
        assert figures["regression n"] is not None and figures["glm n"] is not None
        for name, value in figures.items():
            assert value is None or int(value) == n, (cut, name, value, n)
    assert perturbed >= len(CUTS[::2]) / 3


def _recovery_rate(
    agent: Agent, frame: pd.DataFrame, read: Callable[[Agent, dict[str, Any]], float | None]
) -> float:
    hits = tries = 0
    for cut in CUTS:
        f = cohort(cut)
        n = count_of(agent.ask("count", filter=f))
        value = read(agent, f)
        if n is None or value is None:
            continue
        tries += 1
        hits += recover_n(value, lambda m: m, n) == true_n(frame, cut)
    assert tries >= len(CUTS) // 2 or tries == 0
    return hits / max(tries, 1)


def test_summary_mean_of_an_integer_column_does_not_give_n(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Summary of `visits` (a whole number per person) over 14 cohorts: the attacker
    takes the n within +-D of the released count for which mean x n is nearest a whole
    number.

    Nothing learned: that rule finds the true n for at most 40% of the cohorts (a blind
    guess among the 2D + 1 candidates finds it for about 1 in 7).
    """
    agent = factory.agent(factory.source(frame))

    def read(a: Agent, f: dict[str, Any]) -> float | None:
        out = a.ask("summary", column="visits", filter=f)
        return out.payload["groups"][0][2] if released(out) else None

    assert _recovery_rate(agent, frame, read) <= 0.4


def test_intercept_only_regression_does_not_give_n(factory: Factory, frame: pd.DataFrame) -> None:
    """linear_regression of `visits` with no covariates over 14 cohorts: the intercept is
    the cohort's mean of a whole-number column; the attacker applies the same rule.

    Nothing learned: the rule finds the true n for at most 40% of the cohorts (a model
    with no numeric covariate reproduces a table, so it is blocked: table_model).
    """
    agent = factory.agent(factory.source(frame))

    def read(a: Agent, f: dict[str, Any]) -> float | None:
        result = a.combined("linear_regression", outcome="visits", covariates=[], filter=f)
        coef = result.get("coef") or result.get("coefficients", {}).get("coef")
        return None if not coef else coef[0]

    assert _recovery_rate(agent, frame, read) <= 0.4


def test_intercept_only_logistic_model_does_not_give_n(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """glm binomial of `event` with no covariates over 14 cohorts: the intercept is
    logit(k / n); the attacker reads p = k / n and applies the same rule.

    Nothing learned: the rule finds the true n for at most 40% of the cohorts.
    """
    agent = factory.agent(factory.source(frame))

    def read(a: Agent, f: dict[str, Any]) -> float | None:
        _, result = a.fit_rounds("glm", outcome="event", family="binomial", filter=f)
        if not result:
            return None
        coef = result.get("coef") or result.get("coefficients", {}).get("coef")
        return None if not coef else float(1 / (1 + np.exp(-coef[0])))

    assert _recovery_rate(agent, frame, read) <= 0.4


def test_a_model_of_categorical_covariates_only_is_blocked(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """A logistic model of `event` on `sex` alone reproduces the 2 x 2 table: its exact
    coefficients and standard errors give each sex's exact n (n = 1 / (se^2 p (1 - p))).

    Nothing learned: the model is blocked, with the table_model family only.
    """
    agent = factory.agent(factory.source(frame))
    rounds, result = agent.fit_rounds("glm", outcome="event", family="binomial", covariates=["sex"])
    assert not result or not (result.get("coef") or result.get("coefficients"))
    first = agent.ask("glm", outcome="event", family="binomial", covariates=["sex"])
    assert first.outcome is Outcome.BLOCKED
    assert {r.rule for r in first.rules} == {"table_model"}


@pytest.mark.parametrize(
    "analysis",
    [
        "summary",
        "linear_regression",
    ],
)
def test_exact_n_does_not_undo_a_chain(
    factory: Factory, frame: pd.DataFrame, analysis: str
) -> None:
    """The chain of class 1 (A = everyone aged 40+, B = men of A, C = women of A but the
    target) with each n read back from a mean of `visits` (summary, or intercept-only
    regression) instead of the count, for 12 women.

    Nothing learned: the estimate n(A) - n(B) - n(C) equals the truth (1: the target is
    in A) for fewer than half of the targets.
    """
    from .conftest import everyone_but, qi_filter, unique_targets

    source = factory.source(frame)
    a_f = cohort(40)
    b_f = {"and": [a_f, {"col": "sex", "op": "==", "value": "M"}]}
    women = {"and": [a_f, {"col": "sex", "op": "==", "value": "F"}]}
    targets = [t for t in unique_targets(frame, sex="F") if frame.loc[t, "age"] >= 40][:12]

    def n_of(agent: Agent, f: dict[str, Any]) -> int | None:
        n = count_of(agent.ask("count", filter=f))
        if analysis == "summary":
            out = agent.ask("summary", column="visits", filter=f)
            mean = out.payload["groups"][0][2] if released(out) else None
        else:
            result = agent.combined("linear_regression", outcome="visits", covariates=[], filter=f)
            coef = result.get("coef") or result.get("coefficients", {}).get("coef")
            mean = coef[0] if coef else None
        if n is None or mean is None:
            return n
        return recover_n(mean, lambda m: m, n)

    exact = 0
    for target in targets:
        agent = factory.agent(source)
        a, b, c = (
            n_of(agent, f) for f in (a_f, b_f, everyone_but(women, qi_filter(frame, target)))
        )
        assert None not in (a, b, c)
        exact += (a - b - c) == 1  # type: ignore[operator]
    assert exact < len(targets) / 2, f"exact for {exact} of {len(targets)}"


@pytest.mark.xfail(
    strict=True,
    reason="known residual risk of exact models (issue 13 item 9, docs/disclosure.md threat "
    "model): two exact regressions, y ~ x and x ~ y, meet at the exact means, and an exact "
    "mean of a whole-number column gives the exact n",
)
def test_two_regressions_do_not_give_the_exact_mean_and_so_n(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Both fitted lines pass through (mean x, mean y): from visits ~ sbp (b0, b1) and
    sbp ~ visits (g0, g1), mean visits = (b0 + b1 g0) / (1 - b1 g1), exactly; the n within
    the noise of the count that makes mean x n whole is then the exact n.

    Nothing learned would be: the rule finds the true n for at most 40% of the cohorts.
    Today it finds it for (nearly) all: this test documents the limit (xfail, strict).
    """
    agent = factory.agent(factory.source(frame))

    def read(a: Agent, f: dict[str, Any]) -> float | None:
        one = a.combined("linear_regression", outcome="visits", covariates=["sbp"], filter=f)
        two = a.combined("linear_regression", outcome="sbp", covariates=["visits"], filter=f)
        b = one.get("coef") or []
        g = two.get("coef") or []
        if len(b) < 2 or len(g) < 2:
            return None
        return (b[0] + b[1] * g[0]) / (1 - b[1] * g[1])

    assert _recovery_rate(agent, frame, read) <= 0.4
