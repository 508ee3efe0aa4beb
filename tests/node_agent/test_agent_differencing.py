"""Differencing attacks against a real agent executor: blocked, remembered per dataset and group."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import DataSource, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy
from node_agent.executor import Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.sql import open_sql_source
from node_agent.state import AgentState

COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}
_ids = itertools.count(1)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[DataSource]:
    # 100 people aged 20..69 (two of each age, F and M); bmi missing for 12 of them.
    # The only 45-year-old woman is person p050.
    rows = []
    for i in range(100):
        age, sex = 20 + i // 2, "F" if i % 2 == 0 else "M"
        rows.append(
            {
                "pid": f"p{i:03d}",
                "age": age,
                "sex": sex,
                "bmi": None if i % 8 == 3 else 20.0 + i % 13,
            }
        )
    path = tmp_path / "cohort.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    pd.DataFrame(rows).to_sql("cohort", engine, index=False)
    engine.dispose()
    s = open_sql_source("cohort", f"sqlite:///{path}", "cohort", COLUMNS)
    # the TRE's grid for age, so histograms of it can release bin edges
    yield dataclasses.replace(s, schema=dataclasses.replace(s.schema, grids={"age": 1.0}))
    s.engine.dispose()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[AgentState]:
    with AgentState(tmp_path / "state.sqlite") as s:
        yield s


def executor(source: DataSource, state: AgentState, *, key: str | None = None) -> Executor:
    policy = LocalPolicy(
        node_id="tre-a",
        analyses={
            n: get_analysis(n) for n in ("count", "crosstab", "summary", "histogram", "quantiles")
        },
        disclosure=DisclosurePolicy(threshold=10, rounding_base=5),
        datasets={"cohort": source.schema},
        keys={"cohort": key} if key else {},
    )
    return Executor(policy, {"cohort": source}, state)


def ask(ex: Executor, analysis: str, project: str = "p1", **params: Any) -> Any:
    task = TaskSpec(
        task_id=f"t-{next(_ids)}",
        job_id=1,
        node="tre-a",
        analysis=analysis,
        dataset="cohort",
        params=params,
        project=project,
    )
    return ex.run(task)


OLDER = {"col": "age", "op": ">=", "value": 40}
# everyone aged 40+ except the only 45-year-old woman
OLDER_BUT_ONE = {
    "and": [
        OLDER,
        {
            "not": {
                "and": [
                    {"col": "age", "op": "==", "value": 45},
                    {"col": "sex", "op": "==", "value": "F"},
                ]
            }
        },
    ]
}


def failed(output: Any) -> set[str]:
    return {r.rule for r in output.rules if not r.passed}


@pytest.mark.parametrize("key", [None, "pid"], ids=["by-values", "by-key"])
def test_two_filters_differing_by_one_person_block_the_second(
    source: DataSource, state: AgentState, key: str | None
) -> None:
    ex = executor(source, state, key=key)
    first = ask(ex, "count", filter=OLDER)
    assert first.outcome is Outcome.RELEASED

    second = ask(ex, "count", filter=OLDER_BUT_ONE)

    assert second.outcome is Outcome.BLOCKED
    assert second.payload == {}
    assert failed(second) == {"differencing"}
    assert state.released_count() == 1


def test_the_order_does_not_matter(source: DataSource, state: AgentState) -> None:
    ex = executor(source, state)
    assert ask(ex, "count", filter=OLDER_BUT_ONE).outcome is Outcome.RELEASED
    assert ask(ex, "crosstab", rows="sex", filter=OLDER).outcome is Outcome.BLOCKED


def test_the_complement_attack_is_blocked_before_anything_is_computed(
    source: DataSource, state: AgentState
) -> None:
    # "everyone but the two 45-year-olds" against "everyone"
    ex = executor(source, state)
    everyone_but = {"col": "age", "op": "!=", "value": 45}

    output = ask(ex, "summary", column="age", filter=everyone_but)

    assert output.outcome is Outcome.BLOCKED
    assert failed(output) == {"cohort_size"}
    assert "leaves out fewer than 10" in next(r.detail for r in output.rules if not r.passed)


def test_a_difference_of_exactly_the_threshold_is_allowed(
    source: DataSource, state: AgentState, tmp_path: Path
) -> None:
    ex = executor(source, state)
    # aged 45 or over: the 10 people aged 40..44 fewer than OLDER
    ten_fewer = {"col": "age", "op": ">=", "value": 45}
    # aged 45 or over, or the 44-year-old man: 9 fewer
    nine_fewer = {
        "or": [
            ten_fewer,
            {
                "and": [
                    {"col": "age", "op": "==", "value": 44},
                    {"col": "sex", "op": "==", "value": "M"},
                ]
            },
        ]
    }
    assert ask(ex, "count", filter=OLDER).outcome is Outcome.RELEASED
    assert ask(ex, "count", filter=ten_fewer).outcome is Outcome.RELEASED
    with AgentState(tmp_path / "fresh.sqlite") as fresh:
        other = executor(source, fresh)
        assert ask(other, "count", filter=OLDER).outcome is Outcome.RELEASED
        assert ask(other, "count", filter=nine_fewer).outcome is Outcome.BLOCKED


def test_asking_the_same_question_again_is_not_differencing(
    source: DataSource, state: AgentState
) -> None:
    ex = executor(source, state)
    assert ask(ex, "count", filter=OLDER).outcome is Outcome.RELEASED
    assert ask(ex, "count", filter=OLDER).outcome is Outcome.RELEASED
    assert state.cohort_count("p1") == 1
    # a table of the same cohort adds its groups (the women, the men), not the cohort again
    assert ask(ex, "crosstab", rows="sex", filter=OLDER).outcome is Outcome.RELEASED
    assert state.cohort_count("p1") == 3


def test_cohorts_are_remembered_across_projects(source: DataSource, state: AgentState) -> None:
    # The same pair asked in two projects describes the same person: the memory is the
    # dataset's, not the project's.
    ex = executor(source, state)
    assert ask(ex, "count", project="p1", filter=OLDER).outcome is Outcome.RELEASED
    output = ask(ex, "count", project="p2", filter=OLDER_BUT_ONE)
    assert output.outcome is Outcome.BLOCKED
    assert failed(output) == {"differencing"}


def test_a_one_person_difference_inside_a_group_is_blocked_despite_padding_elsewhere(
    source: DataSource, state: AgentState
) -> None:
    # Given a summary by sex of everyone aged 40+
    ex = executor(source, state)
    assert ask(ex, "summary", column="age", by="sex", filter=OLDER).outcome is Outcome.RELEASED
    # When the second cohort drops the 45-year-old woman and pads with ten younger men, so
    # the whole cohorts differ by 11 people but the women's groups by one
    padding = {
        "and": [
            {"col": "age", "op": ">=", "value": 30},
            {"col": "age", "op": "<", "value": 40},
            {"col": "sex", "op": "==", "value": "M"},
        ]
    }
    output = ask(ex, "summary", column="age", by="sex", filter={"or": [OLDER_BUT_ONE, padding]})
    # Then the output is blocked by the group's difference
    assert output.outcome is Outcome.BLOCKED
    assert failed(output) == {"differencing"}


def test_cohorts_survive_an_agent_restart(source: DataSource, tmp_path: Path) -> None:
    path = tmp_path / "restart.sqlite"
    with AgentState(path) as before:
        assert ask(executor(source, before), "count", filter=OLDER).outcome is Outcome.RELEASED
    with AgentState(path) as after:
        assert (
            ask(executor(source, after), "count", filter=OLDER_BUT_ONE).outcome is Outcome.BLOCKED
        )


def test_a_summary_cohort_leaves_out_missing_values(source: DataSource, state: AgentState) -> None:
    # Padding a filter with people whose bmi is missing does not hide a one-person difference
    ex = executor(source, state)
    assert ask(ex, "summary", column="bmi", filter=OLDER).outcome is Outcome.RELEASED
    padded = {"or": [OLDER_BUT_ONE, {"col": "bmi", "op": "is_null"}]}
    output = ask(ex, "summary", column="bmi", filter=padded)
    assert output.outcome is Outcome.BLOCKED
    assert failed(output) == {"differencing"}


def test_blocked_outputs_are_remembered_too(source: DataSource, state: AgentState) -> None:
    # A blocked query counts toward the memory once measured: probing near it is blocked.
    ex = executor(source, state)
    tiny = {"col": "age", "op": "<", "value": 23}  # 6 people
    assert ask(ex, "count", filter=tiny).outcome is Outcome.BLOCKED
    assert state.cohort_count() == 1


def test_an_unreadable_key_column_stops_the_agent_at_start_up(
    source: DataSource, state: AgentState
) -> None:
    from fedtre.errors import NotFound

    with pytest.raises(NotFound, match="key column 'patient_no'"):
        executor(source, state, key="patient_no")


def test_the_same_records_under_a_different_question_are_refused_like_a_near_difference(
    source: DataSource, state: AgentState
) -> None:
    # Given everyone aged 40+ counted
    ex = executor(source, state)
    assert ask(ex, "count", filter=OLDER).outcome is Outcome.RELEASED
    # When the attacker asks "40+ but the 30-year-old woman" (who is not 40+: the same
    # records) and "40+ but the 45-year-old woman" (who is: one fewer)
    not_in = {
        "and": [
            OLDER,
            {
                "not": {
                    "and": [
                        {"col": "age", "op": "==", "value": 30},
                        {"col": "sex", "op": "==", "value": "F"},
                    ]
                }
            },
        ]
    }
    outside = ask(ex, "count", filter=not_in)
    inside = ask(ex, "count", filter=OLDER_BUT_ONE)
    # Then both are refused alike: whether she is in the cohort does not show
    assert outside.outcome is inside.outcome is Outcome.BLOCKED
    assert failed(outside) == failed(inside) == {"differencing"}


def test_the_same_question_by_another_analysis_or_rewritten_is_answered(
    source: DataSource, state: AgentState
) -> None:
    ex = executor(source, state)
    older_women = {"and": [OLDER, {"col": "sex", "op": "==", "value": "F"}]}
    assert ask(ex, "crosstab", rows="sex", filter=OLDER).outcome is Outcome.RELEASED
    # the table's row "F" is the question "40+ and F", asked again as a count, reordered
    reordered = {"and": [{"col": "sex", "op": "==", "value": "F"}, OLDER]}
    assert ask(ex, "count", filter=reordered).outcome is Outcome.RELEASED
    assert ask(ex, "count", filter=older_women).outcome is Outcome.RELEASED


def bins_of(output: Any) -> list[list[Any]]:
    return [list(b) for b in output.payload["bins"]]


def test_a_histogram_bin_shifted_by_fewer_than_threshold_records_is_blocked(
    source: DataSource, state: AgentState
) -> None:
    # Given a width-10 histogram of age: bins below 30 (open), [30, 40), [40, 50), [50, 60)
    # and 60 up (open), 20 people each
    ex = executor(source, state)
    first = ask(ex, "histogram", column="age", width=10)
    assert first.outcome is Outcome.RELEASED
    assert [b[:2] for b in bins_of(first)] == [[None, 30], [30, 40], [40, 50], [50, 60], [60, None]]
    # When the bins are shifted by 2 on the grid: [32, 42) differs from [30, 40) by the
    # four people aged 30, 31, 40 and 41, though the two cohorts are the same people
    shifted = ask(ex, "histogram", column="age", width=10, origin=2)
    # Then it is blocked by the bins' difference; the same histogram again is answered alike
    assert shifted.outcome is Outcome.BLOCKED and shifted.payload == {}
    assert failed(shifted) == {"differencing"}
    again = ask(ex, "histogram", column="age", width=10)
    assert again.outcome is Outcome.RELEASED
    assert bins_of(again) == bins_of(first)


def _range(low: tuple[str, int] | None, high: tuple[str, int] | None) -> dict[str, Any]:
    terms = [{"col": "age", "op": op, "value": v} for op, v in (low, high) if op]
    return terms[0] if len(terms) == 1 else {"and": terms}


NO_BOUND = ("", 0)


@pytest.mark.parametrize(
    ("params", "filter_", "outcome"),
    [
        # the inner bin [40, 50) of width-10 bins, as a filter (in any order)
        ({"width": 10}, _range(("<", 50), (">=", 40)), Outcome.RELEASED),
        # the same 20 people written differently (ages are whole numbers)
        ({"width": 10}, _range((">", 39), ("<=", 49)), Outcome.BLOCKED),
        # the open lower bin "under 30", and "under 28": four fewer
        ({"width": 10}, _range(("<", 30), NO_BOUND), Outcome.RELEASED),
        ({"width": 10}, _range(("<", 28), NO_BOUND), Outcome.BLOCKED),
        # fixed edges close the last one: the open upper bin is 50 <= age <= 69, and
        # 50 <= age < 69 is two fewer
        ({"edges": [20, 30, 40, 50, 69]}, _range((">=", 50), ("<=", 69)), Outcome.RELEASED),
        ({"edges": [20, 30, 40, 50, 69]}, _range((">=", 50), ("<", 69)), Outcome.BLOCKED),
    ],
    ids=["bin", "bin-rewritten", "open", "open-less-4", "edges-closed", "edges-less-2"],
)
def test_a_released_bin_is_remembered_with_its_range_as_the_question(
    source: DataSource,
    state: AgentState,
    params: dict[str, Any],
    filter_: dict[str, Any],
    outcome: Outcome,
) -> None:
    # Given a histogram of age (20 people in each of 20..29, 30..39, 40..49, ...)
    ex = executor(source, state)
    assert ask(ex, "histogram", column="age", **params).outcome is Outcome.RELEASED
    # When a count asks a released bin's range, or nearly the same records
    output = ask(ex, "count", filter=filter_)
    # Then the bin's own question is answered; the same or nearly the same records under
    # another question are refused
    assert output.outcome is outcome
    if outcome is Outcome.BLOCKED:
        assert failed(output) == {"differencing"}


def test_a_quantile_interval_is_remembered_like_a_histogram_bin(
    source: DataSource, state: AgentState, tmp_path: Path
) -> None:
    def interval(ex: Executor) -> tuple[float, float]:
        quantiles = ask(ex, "quantiles", column="age", width=10)
        assert quantiles.outcome is Outcome.RELEASED
        return next(
            (lo, hi) for lo, hi, _ in quantiles.payload["intervals"] if None not in (lo, hi)
        )

    def ages(lo: float, hi: float) -> dict[str, Any]:
        return {
            "and": [
                {"col": "age", "op": ">=", "value": lo},
                {"col": "age", "op": "<", "value": hi},
            ]
        }

    # Given quantiles of age on a grid of 10 (intervals of at least 10 people)
    ex = executor(source, state)
    lo, hi = interval(ex)
    # When a count asks for one interval's range less its last age (two people fewer)
    output = ask(ex, "count", filter=ages(lo, hi - 1))
    # Then it is blocked by the interval's memory
    assert output.outcome is Outcome.BLOCKED
    assert failed(output) == {"differencing"}
    # while, on another agent's memory, the interval's own range (the same question) is
    # answered
    with AgentState(tmp_path / "other.sqlite") as other:
        ex = executor(source, other)
        lo, hi = interval(ex)
        assert ask(ex, "count", filter=ages(lo, hi)).outcome is Outcome.RELEASED
