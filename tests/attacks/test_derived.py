"""Attack class: derived variables that pick out one person.

The attacker knows a target's quasi-identifiers (age, sex, region: unique in the data) and
wants one fact: is the target diabetic? Derived variables give new ways to write a group
of one: a band one unit wide, a recode that isolates one value, an indicator I(x == v),
an interaction of quasi-identifiers. Each must meet the same threshold, cell-key,
differencing and dominance checks as a declared column, and a derived numeric gets no
released bounds (grids are for declared columns).

Criterion, unless stated otherwise: what the researcher receives is identical whether the
target is diabetic or not (two worlds, fresh agents, same TRE secret).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from fedtre.analyses import Outcome

from .conftest import (
    DEFAULT,
    Factory,
    assert_generic_block,
    count_of,
    public_view,
    seen,
    unique_targets,
    view_text,
)

S = {"col": "diabetic", "op": "==", "value": 1}


def _worlds(frame: pd.DataFrame, target: int) -> list[pd.DataFrame]:
    worlds = []
    for diabetic in (0, 1):
        world = frame.copy()
        world.loc[target, "diabetic"] = diabetic
        worlds.append(world)
    return worlds


def _same_in_both_worlds(
    factory: Factory, frame: pd.DataFrame, target: int, questions: list[tuple[str, dict[str, Any]]]
) -> list[Any]:
    """Ask every question of a fresh agent in each world; assert the views are identical."""
    views = []
    for world in _worlds(frame, target):
        agent = factory.agent(factory.source(world))
        views.append([agent.ask(analysis, **params) for analysis, params in questions])
    assert [public_view(v) for v in views[0]] == [public_view(v) for v in views[1]]
    return views[0]


def _figures_of(view: Any, label: str) -> list[Any]:
    """The released figures of a table's cells or a summary's groups labelled `label`."""
    rows = view.payload.get("cells", []) + view.payload.get("groups", [])
    return [row for row in rows if row[0] == label and any(v is not None for v in row[1:])]


def _person(frame: pd.DataFrame, target: int) -> tuple[int, str, str]:
    row = frame.loc[target]
    return int(row["age"]), str(row["sex"]), str(row["region"])


def _sex_region(sex: str, region: str) -> list[dict[str, Any]]:
    return [
        {"col": "sex", "op": "==", "value": sex},
        {"col": "region", "op": "==", "value": region},
    ]


def test_a_band_one_year_wide_is_a_group_of_one_and_is_withheld(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """bands(age, [a, a + 1]) among the target's sex and region: the band [a, a+1) holds the
    target alone. Its group in a table of diabetic, and its count, are not released."""
    target = unique_targets(frame)[0]
    age, sex, region = _person(frame, target)
    band = f"bands(age, [{age}, {age + 1}])"
    label = f"[{age}, {age + 1})"
    views = _same_in_both_worlds(
        factory,
        frame,
        target,
        [
            ("crosstab", {"rows": band, "columns": "diabetic", "filter": {"and": _sex_region(sex, region)}}),
            ("count", {"filter": {"and": [*_sex_region(sex, region), {"col": band, "op": "==", "value": label}]}}),
        ],
    )  # fmt: skip
    table, count = views
    # the band's cells carry no figure (the whole table is blocked or the cells withheld)
    assert table.outcome is not Outcome.RELEASED
    assert not [c for c in table.payload.get("cells", []) if c[0] == label]
    # the cohort of one is blocked, in fixed words, naming neither the band nor the age
    assert_generic_block(count, forbidden=("bands", label))


def test_a_recode_that_isolates_one_value_is_a_group_of_one_and_is_withheld(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """recode(region, {"<target's region>": "target"}) among the target's age and sex: the
    group "target" is the target alone. A summary of diabetic by it releases no figure
    for that group."""
    target = unique_targets(frame)[0]
    age, sex, region = _person(frame, target)
    recode = f'recode(region, {{"{region}": "target"}})'
    only = {
        "and": [{"col": "age", "op": "==", "value": age}, {"col": "sex", "op": "==", "value": sex}]
    }
    (summary,) = _same_in_both_worlds(
        factory, frame, target, [("summary", {"column": "diabetic", "by": recode, "filter": only})]
    )
    assert summary.outcome is not Outcome.RELEASED
    assert _figures_of(summary, "target") == []


def test_an_indicator_of_one_value_is_a_group_of_one_and_is_withheld(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """I(age == a) and the interaction sex:region as the rows of a table of diabetic: the
    cell (true, target's sex:region) is the target alone and is not released."""
    target = unique_targets(frame)[0]
    age, sex, region = _person(frame, target)
    indicator = f"I(age == {age})"
    views = _same_in_both_worlds(
        factory,
        frame,
        target,
        [
            ("crosstab", {"rows": indicator, "columns": "diabetic", "filter": {"and": _sex_region(sex, region)}}),
            ("crosstab", {"rows": "sex:region", "columns": "diabetic", "filter": {"col": indicator, "op": "==", "value": True}}),
        ],
    )  # fmt: skip
    for view, isolating in zip(views, ("true", f"{sex}:{region}"), strict=True):
        assert view.outcome is not Outcome.RELEASED
        assert _figures_of(view, isolating) == []


def test_a_derived_group_table_releases_its_safe_cells_and_withholds_the_small_one(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The release stage acts on derived groups cell by cell, as on declared ones: a table of
    diabetic by sex:region (twenty groups of ~30) releases its cells that reach the
    threshold and withholds the rest, never a count under the threshold."""
    agent = factory.agent(factory.source(frame))
    view = agent.ask("crosstab", rows="sex:region", columns="diabetic")
    exact = frame.assign(g=frame.sex + ":" + frame.region).groupby(["g", "diabetic"]).size()
    released = {(c[0], c[1]): c[2] for c in view.payload["cells"] if c[2] is not None}
    assert released, "the table released nothing: the attack below would be vacuous"
    small = {(g, str(d)) for (g, d), n in exact.items() if n < DEFAULT.threshold}
    assert small, "the data has no small cell to withhold"
    assert not small & set(released)


def test_differencing_through_a_derived_filter_is_blocked(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """S, then S without the target written with derived variables only (the interaction
    sex:region and an indicator of the age). The memory compares the records, whatever
    the expression: the second is blocked, and the block names no expression or value."""
    target = next(t for t in unique_targets(frame) if frame.loc[t, "diabetic"] == 1)
    age, sex, region = _person(frame, target)
    agent = factory.agent(factory.source(frame))
    assert count_of(agent.ask("count", filter=S)) is not None
    not_target = {
        "not": {
            "and": [
                {"col": "sex:region", "op": "==", "value": f"{sex}:{region}"},
                {"col": f"I(age == {age})", "op": "==", "value": True},
            ]
        }
    }
    second = agent.ask("count", filter={"and": [S, not_target]})
    assert_generic_block(second, forbidden=("sex:region", "I(age", region))
    assert {r.rule for r in second.rules} == {"differencing"}


def test_a_derived_numeric_has_no_released_bounds(factory: Factory, frame: pd.DataFrame) -> None:
    """A histogram or quantiles of I(sbp * 1) or log(sbp) would place edges on the data's own
    values (a derived column has no grid): both are refused, and the refusal quotes no
    record's value."""
    agent = factory.agent(factory.source(frame))
    values = {f"{v:.2f}" for v in frame["sbp"]} | {f"{v:.4f}" for v in frame["sbp"].map(float)}
    for analysis, params in (
        ("histogram", {"column": "I(sbp * 1)", "width": 1}),
        ("quantiles", {"column": "log(sbp)", "width": 1}),
    ):
        output = agent.ask(analysis, **params)
        assert output.outcome is Outcome.REFUSED, output
        assert output.payload == {}
        text = view_text(output)
        assert "derived variable" in text and "has none" in text
        assert not any(v in text for v in values)
        assert not re.search(r"\d\.\d", text.replace("sbp * 1", ""))


def test_equivalent_expressions_are_one_question_to_the_memory(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The same band written two ways (spacing, 40 and 40.0) is one canonical expression:
    the differencing memory sees the same question, not a new one to difference against.
    Criterion: both are answered with the same released figure."""
    agent = factory.agent(factory.source(frame))
    first = agent.ask(
        "count", filter={"col": "bands(age,[40,60])", "op": "==", "value": "[40, 60)"}
    )
    second = agent.ask(
        "count", filter={"col": "bands( age , [40.0, 60] )", "op": "==", "value": "[40, 60)"}
    )
    assert count_of(first) is not None
    assert count_of(first) == count_of(second)


def test_a_derived_numeric_that_singles_out_the_target_blocks_the_model(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """sbp ~ age + I(age == a):visits among the target's sex and region: the derived
    covariate is non-zero for the target alone, so the fit would pass through the target
    and give their sbp. Criterion: the model is blocked (leverage), identically whether
    the target's sbp is 120.13 or 170.61; no coefficient is released."""
    target = next(t for t in unique_targets(frame) if frame.loc[t, "visits"] > 0)
    age, sex, region = _person(frame, target)
    views = []
    for sbp in (120.13, 170.61):
        world = frame.copy()
        world.loc[target, "sbp"] = sbp
        agent = factory.agent(factory.source(world))
        output = agent.run(
            "linear_regression",
            outcome="sbp",
            covariates=["age", f"I(age == {age}):visits"],
            filter={"and": _sex_region(sex, region)},
        )
        assert "leverage" in {r.rule for r in output.rules if not r.passed}
        views.append(seen("linear_regression", output))
    assert public_view(views[0]) == public_view(views[1])
    assert_generic_block(views[0], forbidden=("visits", "I(age"))


def test_one_cohort_respelled_many_ways_gives_one_noisy_count_not_many_to_average(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The averaging attack through derived variables: the cohort age >= 40 written as the
    declared column and as five expressions whose canonical texts all differ. If each
    spelling drew fresh noise, the mean of the answers would home in on the exact count.
    Criterion: every spelling is either refused or answers the same released count (the
    cell key is the records' own, whatever the question), so averaging learns nothing."""
    agent = factory.agent(factory.source(frame))
    spellings = [
        {"col": "age", "op": ">=", "value": 40},
        {"col": "I(age >= 40)", "op": "==", "value": True},
        {"col": "I(age + 0 >= 40)", "op": "==", "value": True},
        {"col": "I(age * 1 >= 40)", "op": "==", "value": True},
        {"col": "I(-age <= -40)", "op": "==", "value": True},
        {"col": "bands(age, [40])", "op": "==", "value": "[40, inf)"},
    ]
    answers = [count_of(agent.ask("count", filter=f)) for f in spellings]
    released = {n for n in answers if n is not None}
    assert answers[0] is not None, "the declared spelling was not answered: the test is vacuous"
    assert released == {answers[0]}, answers
