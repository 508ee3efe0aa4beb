"""Attack class: a rule's outcome made to depend on the target's attribute.

Every rule decides from the data (a group is small, a contribution dominates, a fit
overflows), and the researcher sees which rule family failed. A rule's outcome is one
bit; derived arithmetic lets the researcher aim that bit at one person: an expression of
the target's quasi-identifiers and the attribute that is extreme (or forms a group of
one) only when the target has it.

- Group existence: among the target's sex and region, `bands(I(1 - diabetic + (age - a)
  ** 2), [0.5, e])` puts the target in "(-inf, 0.5)" alone if they are diabetic and among
  the others (in "[0.5, e)") if not; e splits the rest into two groups of at least the
  threshold. Not diabetic: both groups released. Diabetic: the target's group withheld,
  the smaller other withheld too, the outcome `suppressed`. With declared columns only, a
  table of `diabetic` over "everyone not diabetic, or the target": not diabetic, one row,
  the cohort's records under another question (refused by the differencing memory);
  diabetic, a row of one (threshold and secondary suppression). Both refused, by
  different rule families.
- Dominance: a summary of `I(1 + 1000 / (((age - a) ** 2 + (diabetic - 1) ** 2) * 1e6 +
  1))` over the cell: 1 for everyone but a diabetic target (1001): NK and p% fail exactly
  when the target is diabetic.
- Overflow: a Poisson fit whose offset is 800 for a diabetic target and under 1 for
  everyone else overflows in its first step exactly when the target is diabetic (the
  offset is not a covariate: leverage and dominance do not look at it).

Criterion for "nothing learned": what the researcher receives is identical whether the
target is diabetic or not. Each attack succeeds today (strict xfail): the defence needs
rule outcomes that do not depend on one record (group levels declared by the TRE, so an
absent level fails like a small one; noise in place of refusals), a change to the release
stage's design rather than one rule. Mitigations a TRE has now: `hold_for_review`, a
narrower `[policy] derived` (the variants here use arithmetic; a cohort filtered on the
attribute with `I(age == a)`, `bands` or `recode` does as well), and the audit (the
padded cohort and the one-person expression are plain there). One bit per query,
and each query of the same records by another question is refused
(test_derived_missingness.py), so the attacker spends a new cohort per bit.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from .conftest import Factory, public_view, qi_filter, unique_targets

LIMIT = (
    "known residual risk (docs/disclosure.md, threat model): a rule's outcome is one bit "
    "about the data, and an expression of the target's quasi-identifiers and attribute "
    "aims it at the target"
)


def _views_in_both_worlds(
    factory: Factory, frame: pd.DataFrame, target: int, analysis: str, params: dict[str, Any]
) -> list[Any]:
    views = []
    for diabetic in (0, 1):
        world = frame.copy()
        world.loc[target, "diabetic"] = diabetic
        agent = factory.agent(factory.source(world))
        views.append(public_view(agent.ask(analysis, **params)))
    return views


@pytest.mark.xfail(strict=True, reason=LIMIT)
@pytest.mark.parametrize("analysis", ["summary", "crosstab"])
def test_a_derived_band_that_holds_the_target_alone_if_diabetic_says_nothing(
    factory: Factory, frame: pd.DataFrame, analysis: str
) -> None:
    target = unique_targets(frame)[0]
    row = frame.loc[target]
    age, sex, region = int(row["age"]), str(row["sex"]), str(row["region"])
    cell = frame[(frame["sex"] == sex) & (frame["region"] == region)]
    # an edge that splits the others into two groups of at least the threshold
    distance = sorted(int((a - age) ** 2) for a in cell["age"] if a != age)
    edge = distance[len(distance) // 2] + 0.5
    assert sum(d < edge for d in distance) >= 10 and sum(d > edge for d in distance) >= 10
    by = f"bands(I(1 - diabetic + (age - {age}) ** 2), [0.5, {edge}])"
    where = {
        "and": [
            {"col": "sex", "op": "==", "value": sex},
            {"col": "region", "op": "==", "value": region},
        ]
    }
    params = (
        {"column": "sbp", "by": by, "filter": where}
        if analysis == "summary"
        else {"rows": by, "filter": where}
    )

    real, other = _views_in_both_worlds(factory, frame, target, analysis, params)

    assert real == other


@pytest.mark.xfail(strict=True, reason=LIMIT)
def test_a_table_over_a_cohort_padded_with_the_target_says_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    target = unique_targets(frame)[0]
    padded = {"or": [{"col": "diabetic", "op": "==", "value": 0}, qi_filter(frame, target)]}

    real, other = _views_in_both_worlds(
        factory, frame, target, "crosstab", {"rows": "diabetic", "filter": padded}
    )

    assert real == other


@pytest.mark.xfail(strict=True, reason=LIMIT)
def test_a_value_dominant_only_for_a_diabetic_target_says_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    target = unique_targets(frame)[0]
    row = frame.loc[target]
    age = int(row["age"])
    cell = {
        "and": [
            {"col": "sex", "op": "==", "value": str(row["sex"])},
            {"col": "region", "op": "==", "value": str(row["region"])},
        ]
    }
    column = f"I(1 + 1000 / (((age - {age}) ** 2 + (diabetic - 1) ** 2) * 1000000 + 1))"

    real, other = _views_in_both_worlds(
        factory, frame, target, "summary", {"column": column, "filter": cell}
    )

    assert real == other


@pytest.mark.xfail(strict=True, reason=LIMIT)
def test_an_offset_that_overflows_only_for_a_diabetic_target_says_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    # no other diabetic shares the target's age: the whole dataset is the cohort
    target = next(
        t
        for t in unique_targets(frame)
        if not ((frame["age"] == frame.loc[t, "age"]) & (frame["diabetic"] == 1)).drop(t).any()
    )
    age = int(frame.loc[target, "age"])
    offset = f"I(800 / (((age - {age}) ** 2 + (diabetic - 1) ** 2) * 1000 + 1))"
    results = []
    for diabetic in (0, 1):
        world = frame.copy()
        world.loc[target, "diabetic"] = diabetic
        agent = factory.agent(factory.source(world))
        try:
            rounds, result = agent.fit_rounds(
                "glm", outcome="visits", family="poisson", covariates=["sbp"], offset=offset
            )
            results.append(("fitted", result is not None))
        except Exception as exc:  # the coordinator's combination fails: the job fails
            results.append(("failed", type(exc).__name__))

    assert results[0] == results[1]
