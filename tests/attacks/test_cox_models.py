"""Attacks through the Cox model: learn a target's event (or its timing) from a fit.

Each attack runs against one agent under the default policy (conftest) and is asked the
same question of two worlds that differ only in the target's event: "nothing learned"
means the researcher receives exactly the same thing in both worlds (and, where a fit
is refused, only the failed rule families in fixed words, nothing that names a level).
"""

from __future__ import annotations

import pandas as pd

from fedtre.analyses import Outcome

from .conftest import (
    Factory,
    assert_generic_block,
    everyone_but,
    public_view,
    qi_filter,
    unique_targets,
)

COX = {"time": "time", "event": "event"}


def flipped(frame: pd.DataFrame, target: int) -> pd.DataFrame:
    """The same data with the target's event status the other way round."""
    other = frame.copy()
    other.loc[target, "event"] = 1 - int(frame.loc[target, "event"])
    return other


def views_in_both_worlds(
    factory: Factory, frame: pd.DataFrame, target: int, **params: object
) -> list[tuple]:
    """Fit cox in the real world and in the flipped one; return what the researcher saw."""
    seen = []
    for world in (frame, flipped(frame, target)):
        agent = factory.agent(factory.source(world))
        rounds, result = agent.fit_rounds("cox", **COX, **params)
        seen.append(([public_view(r) for r in rounds], result))
    return seen


def test_a_covariate_that_singles_out_the_target_gives_no_fit(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The dummy-covariate attack: a cohort where `visits` is one value for everyone but
    the target. Its coefficient would be the log hazard ratio of the target against
    everyone else: large and positive when their event came early, running off to minus
    infinity when they were censored.

    Nothing learned: round 1 is blocked by the leverage rule (the target's leverage is
    about 1) in both worlds, identically, and no coefficient is released.
    """
    target = unique_targets(frame)[0]
    other = (int(frame.loc[target, "visits"]) + 3) % 12
    cohort = {"or": [{"col": "visits", "op": "==", "value": other}, qi_filter(frame, target)]}

    real, counterfactual = views_in_both_worlds(
        factory, frame, target, covariates=["visits"], filter=cohort
    )

    assert real == counterfactual
    rounds, result = real
    assert result is None and len(rounds) == 1
    agent = factory.agent(factory.source(frame))
    blocked = agent.ask("cox", **COX, covariates=["visits"], filter=cohort)
    assert_generic_block(blocked)
    assert {r.rule for r in blocked.rules} == {"leverage"}


def test_a_level_of_one_person_is_refused_and_never_named(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """The target alone has postcode "ZZ9"; the researcher fits cox on C(postcode).

    Nothing learned: the fit is blocked at round 1 by level_counts (and leverage: the
    target's indicator column singles them out) in both worlds, identically, and "ZZ9"
    appears nowhere the researcher receives.
    """
    target = unique_targets(frame)[0]
    world = frame.copy()
    world.loc[target, "postcode"] = "ZZ9"

    real, counterfactual = views_in_both_worlds(
        factory, world, target, covariates=["age", "postcode"]
    )

    assert real == counterfactual
    assert real[1] is None
    agent = factory.agent(factory.source(world))
    blocked = agent.ask("cox", **COX, covariates=["age", "postcode"])
    assert_generic_block(blocked, forbidden=("ZZ9",))
    assert {r.rule for r in blocked.rules} == {"level_counts", "leverage"}


def test_a_cohort_whose_only_possible_event_is_the_target_gives_no_fit(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Cohort: everyone censored, plus the target. Whether a fit comes back (one event)
    or not (no event) would say whether the target had the event.

    Nothing learned: both worlds are blocked at round 1 by the same rule families (too
    few events; too few records at a level of the event indicator).
    """
    target = unique_targets(frame)[0]
    cohort = {"or": [{"col": "event", "op": "==", "value": 0}, qi_filter(frame, target)]}

    real, counterfactual = views_in_both_worlds(
        factory, frame, target, covariates=["age"], filter=cohort
    )

    assert real == counterfactual
    assert real[1] is None
    agent = factory.agent(factory.source(frame))
    blocked = agent.ask("cox", **COX, covariates=["age"], filter=cohort)
    assert_generic_block(blocked)
    assert {r.rule for r in blocked.rules} == {"level_counts", "events_per_parameter"}


def test_a_fit_then_the_same_fit_without_the_target_is_blocked(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Fit cox on S, then on S less the target: the two fits' scores would differ by the
    target's contribution, and their events by the target's event.

    Nothing learned: the first fit releases the same perturbed n and events in every
    round; the second is blocked by the differencing memory before anything is computed.
    """
    s = {"col": "diabetic", "op": "==", "value": 1}
    target = next(t for t in unique_targets(frame) if frame.loc[t, "diabetic"] == 1)
    agent = factory.agent(factory.source(frame))

    rounds, result = agent.fit_rounds("cox", **COX, covariates=["age"], filter=s)
    assert result is not None and result["model"]["converged"] is True
    assert all(r.outcome is Outcome.RELEASED for r in rounds)
    assert len({(r.payload["n"], r.payload["events"]) for r in rounds}) == 1

    minus = everyone_but(s, qi_filter(frame, target))
    second = agent.ask("cox", "p2", **COX, covariates=["age"], filter=minus)
    assert_generic_block(second, forbidden=("diabetic",))
    assert {r.rule for r in second.rules} == {"differencing"}


def test_the_fit_events_then_the_events_less_the_target_are_blocked(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Fit cox on S (its events leave as a count), then count S's events less the target:
    the difference of the two counts would be the target's event.

    Nothing learned: the fit's event records are remembered as a group, so the count is
    blocked by the differencing memory whether or not the target had the event (a set one
    record smaller, or the same set asked by another question).
    """
    s = {"col": "diabetic", "op": "==", "value": 1}
    target = next(t for t in unique_targets(frame) if frame.loc[t, "diabetic"] == 1)
    events_less_target = everyone_but(
        {"and": [s, {"col": "event", "op": "==", "value": 1}]}, qi_filter(frame, target)
    )
    views = []
    for world in (frame, flipped(frame, target)):
        agent = factory.agent(factory.source(world))
        rounds, result = agent.fit_rounds("cox", **COX, covariates=["age"], filter=s)
        assert result is not None
        count = agent.ask("count", "p2", filter=events_less_target)
        assert_generic_block(count)
        assert {r.rule for r in count.rules} == {"differencing"}
        views.append(public_view(count))
    assert views[0] == views[1]
