"""Attack class 1: differencing.

The attacker knows a target's quasi-identifiers (age, sex, region: unique in the data)
and wants one sensitive fact: is the target diabetic? Cohort S = "diabetic == 1".
Every attack compares released figures of cohorts that differ by the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedtre.analyses import Outcome

from .conftest import (
    DEFAULT,
    Factory,
    assert_generic_block,
    count_of,
    everyone_but,
    public_view,
    qi_filter,
    unique_targets,
)

S = {"col": "diabetic", "op": "==", "value": 1}


def test_pair_a_and_a_minus_target_is_blocked(factory: Factory, frame: pd.DataFrame) -> None:
    """A = S, then A minus the target (the target is in S).

    Nothing learned: the second output is blocked, shows only the differencing family in
    fixed words, and no number is released beside the first count, so n(A) - n(A minus
    target) cannot be formed.
    """
    target = next(t for t in unique_targets(frame) if frame.loc[t, "diabetic"] == 1)
    agent = factory.agent(factory.source(frame))
    first = agent.ask("count", filter=S)
    assert count_of(first) is not None
    second = agent.ask("count", filter=everyone_but(S, qi_filter(frame, target)))
    assert_generic_block(second, forbidden=("diabetic",))
    assert {r.rule for r in second.rules} == {"differencing"}


def test_same_pair_in_two_projects_is_blocked(factory: Factory, frame: pd.DataFrame) -> None:
    """A asked in project p1, A minus the target asked in project p2 (and by crosstab).

    Nothing learned: the memory is the dataset's, so the second cohort is blocked in any
    project and by any analysis; only one figure about the pair is ever released.
    """
    target = next(t for t in unique_targets(frame) if frame.loc[t, "diabetic"] == 1)
    agent = factory.agent(factory.source(frame))
    assert count_of(agent.ask("count", "p1", filter=S)) is not None
    minus = everyone_but(S, qi_filter(frame, target))
    assert_generic_block(agent.ask("count", "p2", filter=minus))
    assert_generic_block(agent.ask("crosstab", "p3", rows="sex", filter=minus))
    assert_generic_block(agent.ask("summary", "p4", column="age", filter=minus))


def test_complement_of_the_target_is_blocked_either_way(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Everyone; then "not (S and target)" (everyone but the target if diabetic); then
    "S and target" itself; in two worlds: the target diabetic or not.

    Nothing learned: what the researcher receives is identical in both worlds (the
    complement and the one-person cohort are blocked by the cohort-size rule whether the
    target is in S or not, and the unfiltered count is the same people).
    """
    target = unique_targets(frame)[0]
    views = []
    for diabetic in (0, 1):
        world = frame.copy()
        world.loc[target, "diabetic"] = diabetic
        agent = factory.agent(factory.source(world))
        one = {"and": [S, qi_filter(world, target)]}
        seen = [
            agent.ask("count"),
            agent.ask("count", filter={"not": one}),
            agent.ask("count", filter=one),
            agent.ask("crosstab", rows="region", filter={"not": one}),
        ]
        for blocked in seen[1:]:
            assert_generic_block(blocked)
        views.append([public_view(v) for v in seen[1:]])
    assert views[0] == views[1]


def _padded_pair_guess(agent: Any, frame: pd.DataFrame, target: int) -> bool:
    """Ask crosstab(region) of S, then of S minus (target + padding in another region);
    return the attacker's guess that the target is in S."""
    region = frame.loc[target, "region"]
    other = next(r for r in "ABCDEFGHIJ" if r != region)
    # padding: the S-members of another region, at least the threshold of them
    padding = {"col": "region", "op": "==", "value": other}
    first = agent.ask("crosstab", rows="region", filter=S)
    second = agent.ask(
        "crosstab", rows="region", filter=everyone_but(S, qi_filter(frame, target), padding)
    )
    if second.outcome is Outcome.BLOCKED:
        return True  # the only difference between the worlds
    if first.outcome is Outcome.BLOCKED:
        return False

    def cell(output: Any) -> Any:
        return {c[0]: c[2] for c in output.payload.get("cells", [])}.get(region)

    return cell(first) != cell(second)


def test_padded_pair_does_not_reveal_membership(factory: Factory, frame: pd.DataFrame) -> None:
    """Crosstab by region of S, then of S minus the target minus all S-members of another
    region (padding >= threshold, so the whole cohorts differ by many): the target's
    region cell differs by one person (target in S) or not at all (target out). Repeated
    for 16 targets, each against a fresh agent (empty memory); the attacker guesses "in"
    when the target's cell changed or the second table was blocked.

    Nothing learned: the attacker's guesses are right for at most 75% of the targets
    (50% is guessing; exact differencing would give 100%).
    """
    source = factory.source(frame)
    targets = unique_targets(frame)[:16]
    right = 0
    for target in targets:
        agent = factory.agent(source)
        guess = _padded_pair_guess(agent, frame, target)
        right += guess == bool(frame.loc[target, "diabetic"])
    assert right / len(targets) <= 0.75, f"{right} of {len(targets)} targets guessed right"


def test_pair_outcome_does_not_reveal_membership(factory: Factory, frame: pd.DataFrame) -> None:
    """The oracle form of the pair: count(S), then count(S minus target), for 16 targets
    (fresh agent each). If the target is not in S the two cohorts are the same records;
    if the target is in S they differ by one.

    Nothing learned: the attacker's guess ("in" when the second count is blocked or
    differs from the first) is right for at most 75% of the targets.
    """
    source = factory.source(frame)
    targets = unique_targets(frame)[:16]
    right = 0
    for target in targets:
        agent = factory.agent(source)
        first = count_of(agent.ask("count", filter=S))
        second = count_of(agent.ask("count", filter=everyone_but(S, qi_filter(frame, target))))
        guess = second is None or second != first
        right += guess == bool(frame.loc[target, "diabetic"])
    assert right / len(targets) <= 0.75, f"{right} of {len(targets)} targets guessed right"


def test_chain_gives_no_exact_arithmetic(factory: Factory, frame: pd.DataFrame) -> None:
    """Chain: A = S', B = S' and sex M, C = S' and sex F minus the target (a woman), so
    B and C partition A minus the target, and every pair of A, B, C differs by many.
    The estimate n(A) - n(B) - n(C) is 1 if the target is in S', 0 if not. Repeated for
    24 women (fresh agent each: one agent's memory would refuse the later chains, whose C
    repeats an earlier C's records under another question), each on its own S' (S less
    two ages other than the target's), so the "out" chains are not one chain repeated.

    Nothing learned: the estimate equals the truth for fewer than half of the chains,
    and the best threshold rule on the estimate classifies at most 80% of the targets
    right (the perturbations of A, B and C do not cancel).
    """
    source = factory.source(frame)
    targets = unique_targets(frame, sex="F")[:24]
    assert len(targets) == 24
    estimates, truths = [], []
    men = {"and": [S, {"col": "sex", "op": "==", "value": "M"}]}
    women = {"and": [S, {"col": "sex", "op": "==", "value": "F"}]}
    ages = sorted(frame["age"].unique())
    for i, target in enumerate(targets):
        agent = factory.agent(source)
        others = [a for a in ages if a != frame.loc[target, "age"]]
        base = {
            "and": [
                S,
                {
                    "col": "age",
                    "op": "not_in",
                    "value": [int(others[2 * i]), int(others[2 * i + 1])],
                },
            ]
        }
        men = {"and": [base, {"col": "sex", "op": "==", "value": "M"}]}
        women = {"and": [base, {"col": "sex", "op": "==", "value": "F"}]}
        a = count_of(agent.ask("count", filter=base))
        b = count_of(agent.ask("count", filter=men))
        c = count_of(agent.ask("count", filter=everyone_but(women, qi_filter(frame, target))))
        assert None not in (a, b, c), "the chain's cohorts are all large and far apart"
        estimates.append(a - b - c)  # type: ignore[operator]
        truths.append(int(frame.loc[target, "diabetic"]))
    est, truth = np.array(estimates), np.array(truths)
    exact = float(np.mean(est == truth))
    assert exact < 0.5, f"the chain gave the exact answer for {exact:.0%} of targets"
    best = max(float(np.mean((est >= cut) == (truth == 1))) for cut in np.arange(-8.5, 9.5, 1.0))
    assert best <= 0.8, f"a threshold on the chain's estimate is right for {best:.0%}"
    # the estimates of "in" and "out" overlap: both spread over several values
    assert len(set(est[truth == 1])) >= 3 and len(set(est[truth == 0])) >= 3
    assert DEFAULT.perturbation == "cell_key"
