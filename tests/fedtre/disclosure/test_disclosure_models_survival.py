"""Rules for models and survival tables."""

from __future__ import annotations

import pytest

from fedtre.analyses import Outcome
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.models import check_model
from fedtre.disclosure.survival import GridCell, protect_survival_table

POLICY = DisclosurePolicy()


def levels(**counts: dict[str | None, int]) -> dict[str, dict[str | None, int]]:
    return dict(counts)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("records", "parameters", "passed"),
    [(40, 13, True), (39, 14, False), (30, 10, True), (30, 11, False)],
)
def test_parameters_at_most_a_third_of_records(records: int, parameters: int, passed: bool) -> None:
    checked = check_model(records=records, parameters=parameters, levels={}, policy=POLICY)
    rule = next(r for r in checked.rules if r.rule == "parameters")
    assert rule.passed is passed


@pytest.mark.parametrize(("records", "passed"), [(14, True), (13, False)])
def test_residual_degrees_of_freedom_at_least_10(records: int, passed: bool) -> None:
    # 4 parameters: 14 - 4 = 10 residual df passes, 13 - 4 = 9 fails
    strict = DisclosurePolicy(min_residual_df=10)
    checked = check_model(records=records, parameters=4, levels={}, policy=strict)
    rule = next(r for r in checked.rules if r.rule == "residual_df")
    assert rule.passed is passed


def test_every_level_of_the_outcome_and_covariates_needs_threshold_records() -> None:
    ok = check_model(
        records=200,
        parameters=4,
        levels=levels(died={"0": 150, "1": 50}, sex={"F": 100, "M": 100}),
        policy=POLICY,
    )
    assert ok.passed

    rare = check_model(
        records=200,
        parameters=4,
        levels=levels(died={"0": 191, "1": 9}, sex={"F": 100, "M": 100}),
        policy=POLICY,
    )
    assert not rare.passed
    rule = next(r for r in rare.rules if r.rule == "level_counts")
    assert "died = 1" in rule.detail and "9" not in rule.detail.replace("died = 1", "")


# ----------------------------------------------------------------------------- survival


def cells(*rows: tuple[int, int, int]) -> list[GridCell]:
    """Grid cells (index, events, censored) with cell keys 0 (rounding policies ignore them)."""
    return [GridCell(i, d, c, 0, 0) for i, d, c in rows]


ROUNDED = DisclosurePolicy(perturbation="rounding", rounding_base=1)


def test_survival_cells_are_merged_until_every_count_is_safe() -> None:
    rows = cells((1, 4, 0), (2, 7, 0), (3, 12, 0), (5, 3, 10), (8, 9, 0), (9, 20, 5))
    protected = protect_survival_table(rows, ROUNDED)

    assert protected.outcome is Outcome.RELEASED
    assert len(protected.intervals) < len(rows)
    for interval in protected.intervals:
        assert interval.at_risk >= 10 and interval.events >= 10
        assert interval.censored == 0 or interval.censored >= 10
    assert sum(i.events + i.censored for i in protected.intervals) == 70
    assert protected.intervals[0].at_risk == 70
    # bounds are grid indices; the first start and the last end are open
    assert protected.intervals[0].start is None and protected.intervals[-1].end is None
    ends = [i.end for i in protected.intervals[:-1]]
    assert ends == [i.start for i in protected.intervals[1:]]


def test_a_survival_table_that_is_safe_as_it_stands_is_released_unchanged() -> None:
    protected = protect_survival_table(cells((1, 10, 0), (2, 15, 10), (4, 12, 0)), ROUNDED)
    assert protected.outcome is Outcome.RELEASED
    assert [i.events for i in protected.intervals] == [10, 15, 12]
    assert [i.at_risk for i in protected.intervals] == [47, 37, 12]


def test_censorings_leave_the_risk_set_before_later_events() -> None:
    # censorings alone in a grid interval before the first event stay in their interval
    permissive = DisclosurePolicy(
        threshold=1, perturbation="rounding", rounding_base=1, zeros_disclosive=False
    )
    protected = protect_survival_table(cells((1, 0, 10), (2, 3, 0), (3, 1, 2)), permissive)
    assert [(i.at_risk, i.events, i.censored) for i in protected.intervals] == [
        (16, 0, 10),
        (6, 3, 0),
        (3, 1, 2),
    ]


def test_a_small_survival_table_is_withheld() -> None:
    protected = protect_survival_table(cells((1, 4, 1), (2, 3, 0)), POLICY)
    assert protected.outcome is Outcome.BLOCKED and protected.intervals == ()


# ----------------------------------------------------------------------------- distributions
