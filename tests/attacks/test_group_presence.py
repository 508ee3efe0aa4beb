"""Attack class: a withheld group's existence, read from the outcome.

A group under the threshold is withheld, its label is named nowhere, and (when it is the
only one) a second group is withheld beside it (secondary suppression). But the outcome
still says that something was withheld (`suppressed`, the `threshold` family failed),
and a researcher who builds the grouping so that the target alone would form a group
exactly when they have the attribute reads the attribute from that outcome:

- derived: among the target's sex and region, `bands(I(1 - diabetic + (age - a) ** 2),
  [0.5, e])` puts the target in "(-inf, 0.5)" alone if they are diabetic and among the
  others (in "[0.5, e)") if not; e splits the rest into two groups of at least the
  threshold. Not diabetic: both groups released. Diabetic: the target's group withheld,
  the smaller other withheld too, the outcome `suppressed`.
- declared columns only: a table of `diabetic` over "everyone not diabetic, or the
  target". Not diabetic: one row, the same records as the cohort under another question
  (refused by the differencing memory). Diabetic: a row of one (threshold and secondary
  suppression). Both refused, by different rule families.

Criterion for "nothing learned": what the researcher receives is identical whether the
target is diabetic or not. Both attacks succeed today (strict xfail): the defence needs
outcomes that do not depend on whether a small group exists (a level's domain declared
by the TRE, so an absent level is a zero cell that fails like a small one, and derived
groupings whose levels do not depend on a record's attribute), a change to the release
stage's design rather than one rule. Mitigations a TRE has now: `[policy] derived`
without `arithmetic` (the derived variant needs it), `hold_for_review` for grouped
outputs, and the audit (the padded cohort and the one-person band are visible there).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from .conftest import Factory, public_view, qi_filter, unique_targets

LIMIT = (
    "known residual risk (docs/disclosure.md, threat model): the outcome says whether a "
    "small group was withheld, and a grouping built from the target's quasi-identifiers "
    "and attribute turns that into the attribute"
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
