"""Attack class: a derived variable whose missing values the researcher writes.

An analysis describes the records with a value of its columns (a summary's column, a
model's covariates): a summary of a column with a missing value describes one record
fewer than a count of the same filter. For a declared column the missing values are the
data's; a derived variable's are the researcher's to write. `0 / d` is 0 where d is not
0 and missing where it is, so

    I(sbp + 0 / ((age - a) ** 2 + (diabetic - 1) ** 2))

equals sbp for everyone except a diabetic aged a, for whom it is missing. Among the
target's sex and region (where the target is the only person aged a) a summary of it
describes the same records as a count of that filter when the target is not diabetic,
and one record fewer when they are. The differencing memory answered the first (the same
records, and the narrowing to non-missing values was not part of the question) and
refused the second (a near difference): the outcome said whether the target is diabetic.

The defence (fedtre.disclosure.differencing.question_of): the narrowing to a derived
variable's non-missing values is part of the question, so both worlds are refused (the
same records under a different question, or a near difference).

Criterion: what the researcher receives is identical whether the target is diabetic or
not (two worlds, fresh agents, same TRE secret), and nothing is released by the second
question in either.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fedtre.analyses import Outcome

from .conftest import (
    Factory,
    assert_generic_block,
    count_of,
    public_view,
    unique_targets,
)


def _worlds(frame: pd.DataFrame, target: int) -> list[pd.DataFrame]:
    worlds = []
    for diabetic in (0, 1):
        world = frame.copy()
        world.loc[target, "diabetic"] = diabetic
        worlds.append(world)
    return worlds


def _missing_for_a_diabetic_aged(column: str, age: int, how: str = "division") -> str:
    """`column` for everyone, missing for a diabetic aged `age` (0 / 0 and log(0) are
    missing)."""
    d = f"(age - {age}) ** 2 + (diabetic - 1) ** 2"
    if how == "log":
        return f"I({column} + 0 * log({d}))"
    return f"I({column} + 0 / ({d}))"


def _cell(frame: pd.DataFrame, target: int) -> tuple[int, dict[str, Any]]:
    """The target's age, and the filter of their sex and region (about 30 people, the
    target the only one of their age)."""
    row = frame.loc[target]
    return int(row["age"]), {
        "and": [
            {"col": "sex", "op": "==", "value": str(row["sex"])},
            {"col": "region", "op": "==", "value": str(row["region"])},
        ]
    }


def _ask_in_both_worlds(
    factory: Factory, frame: pd.DataFrame, target: int, questions: list[tuple[str, dict[str, Any]]]
) -> list[list[Any]]:
    """Ask the questions of a fresh agent in each world; return each world's views."""
    views = []
    for world in _worlds(frame, target):
        agent = factory.agent(factory.source(world))
        views.append([agent.ask(analysis, **params) for analysis, params in questions])
    return views


@pytest.mark.parametrize("how", ["division", "log"])
def test_a_summary_of_a_derived_column_missing_only_for_the_target_says_nothing(
    factory: Factory, frame: pd.DataFrame, how: str
) -> None:
    """count(S), then a summary over S of sbp made missing for a diabetic of the target's
    age (by a division by zero, or the log of zero)."""
    target = unique_targets(frame)[0]
    age, cell = _cell(frame, target)
    column = _missing_for_a_diabetic_aged("sbp", age, how)

    real, other = _ask_in_both_worlds(
        factory,
        frame,
        target,
        [("count", {"filter": cell}), ("summary", {"column": column, "filter": cell})],
    )

    assert [public_view(v) for v in real] == [public_view(v) for v in other]
    count, summary = real
    assert count_of(count) is not None
    assert_generic_block(summary, forbidden=("diabetic", "sbp"))
    assert {r.rule for r in summary.rules} == {"differencing"}


def test_the_summary_first_then_the_count_says_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The same pair in the other order: the summary is the first question of its records
    (answered in both worlds, with perturbed figures); the count of S is then refused in
    both."""
    target = unique_targets(frame)[0]
    age, cell = _cell(frame, target)
    column = _missing_for_a_diabetic_aged("sbp", age)

    real, other = _ask_in_both_worlds(
        factory,
        frame,
        target,
        [("summary", {"column": column, "filter": cell}), ("count", {"filter": cell})],
    )

    assert public_view(real[1]) == public_view(other[1])
    assert real[0].outcome is Outcome.RELEASED and other[0].outcome is Outcome.RELEASED
    assert_generic_block(real[1])
    assert {r.rule for r in real[1].rules} == {"differencing"}


def test_a_model_covariate_missing_only_for_the_target_says_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """count(S), then a regression over S whose covariate is missing for a diabetic of the
    target's age (the model's records are its complete cases)."""
    target = unique_targets(frame)[0]
    age, cell = _cell(frame, target)
    covariate = _missing_for_a_diabetic_aged("visits", age)
    model = {"outcome": "sbp", "covariates": ["age", covariate], "filter": cell}

    real, other = _ask_in_both_worlds(
        factory, frame, target, [("count", {"filter": cell}), ("linear_regression", model)]
    )

    assert [public_view(v) for v in real] == [public_view(v) for v in other]
    assert_generic_block(real[1])
    assert {r.rule for r in real[1].rules} == {"differencing"}


def test_a_cox_fit_with_a_covariate_missing_only_for_the_target_says_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """count(region), then a Cox fit over the target's region whose covariate is missing for
    a diabetic of the target's age (the target the only one of that age in the region)."""
    sizes = frame.groupby(["age", "region"])["age"].transform("size")
    target = int(frame.index[sizes == 1][0])
    age, region = int(frame.loc[target, "age"]), str(frame.loc[target, "region"])
    cohort = {"col": "region", "op": "==", "value": region}
    covariate = _missing_for_a_diabetic_aged("visits", age)

    views = []
    for world in _worlds(frame, target):
        agent = factory.agent(factory.source(world))
        count = agent.ask("count", filter=cohort)
        rounds, result = agent.fit_rounds(
            "cox", time="time", event="event", covariates=[covariate], filter=cohort
        )
        views.append((public_view(count), [public_view(r) for r in rounds], result))

    assert views[0] == views[1]
    _, rounds, result = views[0]
    assert result is None and len(rounds) == 1
    assert rounds[0][0] is Outcome.BLOCKED
    assert {rule for rule, _, _ in rounds[0][2]} == {"differencing"}


def test_a_derived_question_asked_again_gets_the_same_answer(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The defence does not refuse repeats: the same summary of a derived column asked
    twice (in another project, written with other spacing) is one question, answered the
    same. Asking a count of the same filter after it is refused, whatever the data: the
    documented cost of the rule (a derived variable's non-missing values are part of the
    question)."""
    agent = factory.agent(factory.source(frame))
    cell = {"col": "region", "op": "==", "value": "A"}
    first = agent.ask("summary", column="log(sbp)", filter=cell)
    again = agent.ask("summary", "p2", column="log( sbp )", filter=cell)
    assert first.outcome is Outcome.RELEASED
    assert public_view(first) == public_view(again)
    count = agent.ask("count", filter=cell)
    assert_generic_block(count)
    assert {r.rule for r in count.rules} == {"differencing"}
