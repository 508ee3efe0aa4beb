"""Attack class 4: oracles on blocked outputs.

A refusal that says why in data-dependent words (a label, a count, which other rules
passed) is itself a release. The target here is the only person with postcode "ZZ9".
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fedtre.analyses import Outcome

from .conftest import (
    Factory,
    assert_generic_block,
    everyone_but,
    public_view,
    qi_filter,
    unique_targets,
    view_text,
)

RARE = "ZZ9"
S = {"col": "diabetic", "op": "==", "value": 1}


@pytest.fixture(scope="module")
def rare_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The cohort with one target whose postcode, ZZ9, nobody else has (diabetic)."""
    world = frame.copy()
    target = next(t for t in unique_targets(world) if world.loc[t, "diabetic"] == 1)
    world.loc[target, "postcode"] = RARE
    return world, target


def test_blocked_outputs_name_nothing(factory: Factory, rare_frame: Any) -> None:
    """Outputs blocked by each rule family: cohort size (the target alone), differencing
    (everyone with S but the target), a model with the rare level as a covariate, a
    dominated model, quantiles of one person.

    Nothing learned: each blocked output as the researcher sees it has no payload, shows
    only the failed rule families in fixed words, the generic error, no digit, and
    neither the rare label nor any other label of the data.
    """
    world, target = rare_frame
    agent = factory.agent(factory.source(world))
    forbidden = (RARE, "AB1", "CD2", "EF3", "GH4")
    assert agent.ask("count", filter=S).outcome is Outcome.RELEASED
    blocked = [
        agent.ask("count", filter=qi_filter(world, target)),
        agent.ask("count", filter=everyone_but(S, qi_filter(world, target))),
        agent.ask("linear_regression", outcome="sbp", covariates=["age", "C(postcode)"]),
        agent.ask(
            "quantiles",
            column="sbp",
            width=1,
            filter={"col": "postcode", "op": "==", "value": RARE},
        ),
    ]
    families = []
    for output in blocked:
        assert_generic_block(output, forbidden=forbidden)
        families.append({r.rule for r in output.rules})
    assert families[0] == {"cohort_size"} and families[1] == {"differencing"}


@pytest.mark.parametrize("diabetic", [0, 1])
def test_rare_level_is_never_named(factory: Factory, rare_frame: Any, diabetic: int) -> None:
    """The rare postcode in every output that could list levels: crosstab, summary by
    postcode, Kaplan-Meier by postcode, linear regression and a GLM with C(postcode),
    each within the cohort "diabetic == 0" and "diabetic == 1" (run once per value of a
    condition, naming the level would say which value the target has).

    Nothing learned: "ZZ9" appears nowhere the researcher receives (node outputs, rule
    words, errors, combined results, round views), in either cohort.
    """
    world, _ = rare_frame
    agent = factory.agent(factory.source(world))
    f = {"col": "diabetic", "op": "==", "value": diabetic}
    seen = [
        agent.ask("crosstab", rows="postcode", filter=f),
        agent.ask("crosstab", rows="postcode", columns="sex", margins=True, filter=f),
        agent.ask("summary", column="sbp", by="postcode", filter=f),
        agent.ask("kaplan_meier", time="time", event="event", by="postcode", filter=f),
        agent.ask("linear_regression", outcome="sbp", covariates=["C(postcode)"], filter=f),
    ]
    texts = [view_text(v) for v in seen]
    texts.append(
        view_text(
            agent.combined("linear_regression", outcome="sbp", covariates=["C(postcode)"], filter=f)
        )
    )
    rounds, result = agent.fit_rounds(
        "glm", outcome="event", family="binomial", covariates=["C(postcode)"], filter=f
    )
    texts += [view_text(v) for v in rounds] + [view_text(result or {})]
    for text in texts:
        assert RARE not in text, text


def test_tracker_search_over_a_padding_set_sees_only_blocked(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Tracker: after count(S), the attacker removes a growing padding set from S (the
    S-members of region A younger than a, for every a) looking for the size at which
    the refusal changes, to then spend it on the target.

    Nothing learned beyond "blocked": every blocked answer of the search is identical
    (same family, same words, same error, no payload), whatever the size of the
    difference (1 to threshold - 1) and whatever other rules passed.
    """
    agent = factory.agent(factory.source(frame))
    assert agent.ask("count", filter=S).outcome is Outcome.RELEASED
    region_a = frame[(frame["region"] == "A") & (frame["diabetic"] == 1)]
    views = set()
    sizes = set()
    for age in sorted(set(region_a["age"]))[:12]:
        padding = {
            "and": [
                {"col": "region", "op": "==", "value": "A"},
                {"col": "age", "op": "<=", "value": int(age)},
            ]
        }
        removed = int((region_a["age"] <= age).sum())
        output = agent.ask("count", filter=everyone_but(S, padding))
        if 0 < removed < 10:
            sizes.add(removed)
            assert_generic_block(output)
            views.add(public_view(output))
    assert len(sizes) >= 5
    assert len(views) == 1, views
