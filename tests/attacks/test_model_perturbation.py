"""Attack class: exact model coefficients under a researcher-made perturbation of one record.

Exact coefficients are a smooth function of every record's covariates. Derived
arithmetic lets the researcher nudge one record's covariate by an amount that carries the
target's value, too little for the leverage or dominance rules to see:

    base:  income ~ age
    unit:  income ~ I(age + 0.001 * e)           e = 1 / ((age - a) ** 2 * 1e6 + 1)
    value: income ~ I(age + 0.00001 * sbp * e)   (e is 1 for the target, ~1e-6 or less else)

Over the same cohort, (value - base) / (unit - base) x 100 is the target's sbp: before
the defence, 173.61 read as 173.6116 from the released coefficients.

The defence (fedtre.disclosure.differencing.question_of): a derived covariate's
narrowing to its non-missing values is part of the question, so a second fit of the same
records with another derived covariate is the same records under a different question,
and is refused.

Criterion: of the three fits over one cohort only one is released; the others are
blocked by the differencing rule in fixed words, in any project; nothing else is released
that would give a second fit of the cohort.
"""

from __future__ import annotations

import pandas as pd

from fedtre.analyses import Outcome

from .conftest import Factory, assert_generic_block


def _target(frame: pd.DataFrame) -> tuple[int, str]:
    """A person unique by (age, region): their age and region (about 60 people)."""
    sizes = frame.groupby(["age", "region"])["age"].transform("size")
    target = int(frame.index[sizes == 1][0])
    return int(frame.loc[target, "age"]), str(frame.loc[target, "region"])


def _covariates(age: int) -> list[str]:
    e = f"(1 / (((age - {age}) ** 2) * 1000000 + 1))"
    return ["age", f"I(age + 0.001 * {e})", f"I(age + 0.00001 * sbp * {e})"]


def test_a_second_fit_of_the_cohort_with_a_nudged_covariate_is_refused(
    factory: Factory, frame: pd.DataFrame
) -> None:
    age, region = _target(frame)
    cohort = {"col": "region", "op": "==", "value": region}
    agent = factory.agent(factory.source(frame))

    base, unit, value = (
        agent.ask("linear_regression", project, outcome="income", covariates=[c], filter=cohort)
        for c, project in zip(_covariates(age), ("p1", "p2", "p3"), strict=True)
    )

    assert base.outcome is Outcome.RELEASED
    for nudged in (unit, value):
        assert_generic_block(nudged, forbidden=("sbp", "age"))
        assert {r.rule for r in nudged.rules} == {"differencing"}


def test_every_fit_nudged_gives_one_answer_at_most(factory: Factory, frame: pd.DataFrame) -> None:
    """The base fit written as a derived variable too (I(age + 0)): three derived
    questions of the same records; the first is answered, the others refused."""
    age, region = _target(frame)
    cohort = {"col": "region", "op": "==", "value": region}
    agent = factory.agent(factory.source(frame))
    covariates = ["I(age + 0)", *_covariates(age)[1:]]

    outputs = [
        agent.ask("linear_regression", outcome="income", covariates=[c], filter=cohort)
        for c in covariates
    ]

    assert [o.outcome for o in outputs] == [Outcome.RELEASED, Outcome.BLOCKED, Outcome.BLOCKED]
    assert all({r.rule for r in o.rules} == {"differencing"} for o in outputs[1:])


def test_a_cox_fit_of_the_cohort_with_a_nudged_covariate_is_refused(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The same nudge in a Cox fit (stratified, exact at the coordinator): the first fit
    of the cohort is released, the nudged one is blocked at round 1, before anything of
    it is computed."""
    age, region = _target(frame)
    cohort = {"col": "region", "op": "==", "value": region}
    agent = factory.agent(factory.source(frame))
    cox = {"time": "time", "event": "event", "filter": cohort}

    rounds, result = agent.fit_rounds("cox", covariates=["visits"], **cox)
    assert result is not None
    nudged_rounds, nudged = agent.fit_rounds(
        "cox", "p2", covariates=[_covariates(age)[2].replace("age +", "visits +", 1)], **cox
    )

    assert nudged is None and len(nudged_rounds) == 1
    assert_generic_block(nudged_rounds[0], forbidden=("sbp", "visits"))
    assert {r.rule for r in nudged_rounds[0].rules} == {"differencing"}
