"""Attack class 7: combining jobs.

Margins of a table asked again as counts; several analyses of one cohort; the rounds
of a GLM.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedtre.analyses import Outcome

from .conftest import Factory, count_of, numbers, unique_targets, view_text

D = 3
J = {"col": "region", "op": "==", "value": "J"}
NOT_DIABETIC = {"col": "diabetic", "op": "==", "value": 0}


def released(output: Any) -> bool:
    return output.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED)


def test_margins_asked_again_as_counts_do_not_recover_a_withheld_cell(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Region J holds exactly 3 diabetics (the target among them). The attacker asks
    crosstab(region x diabetic, margins), then count(J) and count(J and not diabetic),
    and estimates the withheld cell (J, diabetic) as the difference.

    Nothing learned: the set of values of the withheld cell consistent with everything
    released (each released count within D of its truth) contains 0 as well as the
    truth, so the attacker cannot tell whether anyone in J is diabetic; and a count job
    about the same records as a released cell or margin gives the same value (asking
    again adds nothing).
    """
    world = frame.copy()
    in_j = world.index[world["region"] == "J"]
    world.loc[in_j, "diabetic"] = 0
    world.loc[in_j[:3], "diabetic"] = 1
    agent = factory.agent(factory.source(world))
    table = agent.ask("crosstab", rows="region", columns="diabetic", margins=True)
    assert released(table)
    cells = {(c[0], c[1]): c[2] for c in table.payload["cells"]}
    assert cells.get(("J", "1")) is None
    margin_j = dict(map(tuple, table.payload["margins"]["rows"])).get("J")
    n_j = count_of(agent.ask("count", filter=J))
    n_j0 = count_of(agent.ask("count", filter={"and": [J, NOT_DIABETIC]}))
    if margin_j is not None and n_j is not None:
        assert n_j == margin_j
    if cells.get(("J", "0")) is not None and n_j0 is not None:
        assert n_j0 == cells[("J", "0")]
    whole = n_j if n_j is not None else margin_j
    part = n_j0 if n_j0 is not None else cells.get(("J", "0"))
    if whole is not None and part is not None:
        low, high = whole - part - 2 * D, whole - part + 2 * D
        assert low <= 0 and high >= 3, (whole, part)


def test_histogram_quantiles_and_summary_of_one_cohort_do_not_locate_the_extreme(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The target alone has sbp above 180 (231.73). On one cohort the attacker asks a
    histogram (width 1 and 5, with origin shifted by 1), quantiles (width 1 and 2, with
    extreme probs), a crosstab by sex and a summary by sex, and pools every number.

    Nothing learned: no released bound or estimate lies above 181 in any of the outputs
    (combined or not), so together they still say nothing about the range where only
    the target is; summary never releases a minimum or maximum.
    """
    world = frame.copy()
    world.loc[unique_targets(world)[0], "sbp"] = 231.73
    agent = factory.agent(factory.source(world))
    bounds: list[float] = []
    for width, origin in ((1, 0), (5, 0), (5, 1)):
        out = agent.ask("histogram", column="sbp", width=width, origin=origin)
        bounds += numbers([b[:2] for b in out.payload.get("bins", [])])
    for width in (1, 2):
        params = {"column": "sbp", "width": width, "probs": [0.01, 0.99, 0.999]}
        out = agent.ask("quantiles", **params)
        bounds += numbers([i[:2] for i in out.payload.get("intervals", [])])
        bounds += numbers(agent.combined("quantiles", **params).get("quantiles"))
    agent.ask("crosstab", rows="sex")
    summary = agent.ask("summary", column="sbp", by="sex")
    assert max(bounds) <= 181, sorted(bounds)[-5:]
    for group in summary.payload.get("groups", []):
        assert len(group) == 4  # label, n, mean, sd: no minimum or maximum
        assert group[2] is None or group[2] < 181


def test_glm_rounds_each_pass_the_rules_and_a_blocked_round_leaks_nothing(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """A logistic GLM of event on age and sex driven round by round; then one with a
    covariate level held by one person (the target's postcode ZZ9).

    Nothing learned: every round of the first job is released with every public rule
    passed, its researcher view carries no model statistic (no X'WX) and its n is the
    count's perturbed n; the second job's first round is blocked generically (no label,
    no number) and no later round runs.
    """
    from .conftest import assert_generic_block

    world = frame.copy()
    world.loc[unique_targets(world)[0], "postcode"] = "ZZ9"
    agent = factory.agent(factory.source(world))
    n = count_of(agent.ask("count"))
    rounds, result = agent.fit_rounds(
        "glm", outcome="event", family="binomial", covariates=["age", "sex"]
    )
    assert result is not None and len(rounds) >= 2
    for view in rounds:
        assert view.outcome is Outcome.RELEASED
        assert all(r.passed for r in view.rules)
        assert "xtwx" not in view.payload and "cross" not in view.payload
        if "n" in view.payload:
            assert view.payload["n"] == n
    if result.get("n") is not None:
        assert result["n"] == n
    rounds, result = agent.fit_rounds(
        "glm", "p2", outcome="event", family="binomial", covariates=["age", "C(postcode)"]
    )
    assert len(rounds) == 1 and result is None
    assert_generic_block(rounds[0], forbidden=("ZZ9", "postcode"))
    assert "ZZ9" not in view_text(rounds[0])


def _bins_differ(first: Any, second: Any) -> bool:
    """The attacker's guess that the target is in [150, 151): the second histogram was
    refused, or one of its bins differs in count from the first's bin it overlaps."""
    if not (released(first) and released(second)):
        return True
    return [b[2] for b in first.payload["bins"]] != [b[2] for b in second.payload["bins"]]


def test_overlapping_histograms_do_not_isolate_a_withheld_bin(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Cross-job secondary suppression. Nobody but possibly the target has sbp in
    [150, 151), a bin a histogram of width 1 withholds. The attacker asks a histogram
    with edges 140, 150, 160, 170, then one with edges 140, 151, 160, 170 (both on the
    grid, of the same cohort): each bin of the second holds the same records as its
    overlapping bin of the first, but for the target when they are in [150, 151). Unless
    the target is in, the two bins are the same records, so their cell keys and released
    counts are equal; if in, they differ by one. Repeated for 16 targets, each in two
    worlds (sbp 150.37 or 149.37) against a fresh agent; the attacker guesses "in" when
    the second histogram is refused or a bin's count changed.

    Nothing learned: the guesses are right for at most 75% of the 32 worlds (50% is
    guessing; without the bins in the differencing memory they are right for nearly
    every world, since equal records give equal counts).
    """
    base = frame.copy()
    unit = (base["sbp"] >= 150) & (base["sbp"] < 151)
    base.loc[unit, "sbp"] -= 1  # empty the unit bin
    right = trials = 0
    for target in base.index[:16]:
        for inside in (False, True):
            world = base.copy()
            world.loc[target, "sbp"] = 150.37 if inside else 149.37
            agent = factory.agent(factory.source(world))
            first = agent.ask("histogram", column="sbp", edges=[140, 150, 160, 170])
            assert released(first) and len(first.payload["bins"]) == 3
            second = agent.ask("histogram", column="sbp", edges=[140, 151, 160, 170])
            right += _bins_differ(first, second) == inside
            trials += 1
    assert right / trials <= 0.75, f"{right} of {trials} worlds guessed right"
