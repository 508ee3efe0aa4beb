"""Dominance (NK, p%), the sd rule and negative values, alone and in the summary analysis."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import DatasetSchema, DataSource, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.dominance import judge_group, nk_dominated, p_percent_unsafe
from fedtre.disclosure.policy import MAX_DOMINANCE_N
from fedtre.disclosure.rules import needs_review

POLICY = DisclosurePolicy()  # NK 2/90, p 10%, threshold 10


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("top", "total", "dominated"),
    [
        ([50.0, 39.9], 100.0, False),  # 89.9%: just safe
        ([50.0, 40.0], 100.0, True),  # exactly 90%: fails ("reaches")
        ([50.0, 40.1], 100.0, True),
        ([0.0, 0.0], 0.0, True),  # a total of 0 reveals every value
    ],
)
def test_nk_rule_fails_when_the_top_two_reach_90_percent(
    top: list[float], total: float, dominated: bool
) -> None:
    assert nk_dominated(top, total, 2, 90) is dominated


def test_nk_rule_with_n_3_counts_three_contributors() -> None:
    assert not nk_dominated([40.0, 30.0, 19.0], 100.0, 2, 90)
    assert nk_dominated([40.0, 30.0, 20.0], 100.0, 3, 90)
    assert not nk_dominated([100.0], 100.0, 0, 90)  # n = 0: rule off


@pytest.mark.parametrize(
    ("top", "total", "unsafe"),
    [
        ([50.0, 30.0], 85.0, False),  # remainder 5 = 10% of 50: just safe
        ([50.0, 30.0], 84.9, True),  # remainder 4.9 < 5
        ([50.0], 50.0, True),  # one contributor: remainder 0
    ],
)
def test_p_percent_rule(top: list[float], total: float, unsafe: bool) -> None:
    assert p_percent_unsafe(top, total, 10) is unsafe
    assert not p_percent_unsafe(top, total, 0)  # p = 0: rule off


def test_negative_values_send_the_group_to_review_not_to_a_verdict() -> None:
    verdict = judge_group([50.0, 40.0], 100.0, -3.0, POLICY)
    assert verdict.has_negative and not verdict.dominated


# ----------------------------------------------------------------------------- summary

SCHEMA = DatasetSchema("firms", {"sector": "string", "income": "float"})


def make_source(tmp_path: Path, frame: pd.DataFrame) -> DataSource:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'firms.db'}")
    frame.to_sql("firms", engine, index=False)
    table = sa.Table("firms", sa.MetaData(), autoload_with=engine)
    return DataSource(engine, table, SCHEMA)


def summarise(source: DataSource, policy: DisclosurePolicy = POLICY, **params: Any) -> Any:
    analysis = get_analysis("summary")
    p = {"column": "income", "by": "sector", **params}
    return analysis.check(p, analysis.compute(p, source), policy)


@pytest.fixture
def firms(tmp_path: Path) -> DataSource:
    rng = np.random.default_rng(3)
    # "even": 30 similar incomes; "giant": 20 incomes, two of which are 95% of the total;
    # "p": 12 incomes, the largest estimable by the second to within 10%
    even = rng.uniform(90, 110, 30)
    giant = np.concatenate([[5000.0, 4500.0], np.full(18, 25.0)])  # top two = 95.5%
    p_case = np.concatenate([[1000.0, 850.0], np.full(10, 5.0)])  # remainder 50 < 100
    frame = pd.DataFrame(
        {
            "sector": ["even"] * 30 + ["giant"] * 20 + ["p"] * 12,
            "income": np.concatenate([even, giant, p_case]),
        }
    )
    source = make_source(tmp_path, frame)
    yield source
    source.engine.dispose()


def test_dominated_groups_are_withheld_whole_and_the_rest_released(firms: DataSource) -> None:
    output = summarise(firms)

    groups = {g: rest for g, *rest in output.payload["groups"]}
    # withheld whole, labels included
    assert "giant" not in groups and "p" not in groups
    assert "hidden" not in output.payload  # nor how many groups were withheld
    assert abs(groups["even"][0] - 30) <= POLICY.noise_deviation  # a perturbed count
    assert groups["even"][1] is not None
    assert output.outcome is Outcome.SUPPRESSED
    failed = {r.rule for r in output.rules if not r.passed}
    assert failed == {"nk_dominance", "p_percent"}
    # the largest contributions never leave the agent
    text = repr(output.payload) + repr(output.rules)
    assert "5000" not in text and "4500" not in text


def test_dominance_can_be_turned_off_by_a_rehearsal_policy(firms: DataSource) -> None:
    output = summarise(firms, DisclosurePolicy(dominance_n=0, p_percent=0))
    assert output.outcome is Outcome.RELEASED
    assert not any(r.rule in ("nk_dominance", "p_percent") for r in output.rules)


def test_top_contributors_are_computed_per_group_in_sql(firms: DataSource) -> None:
    raw = get_analysis("summary").compute({"column": "income", "by": "sector"}, firms)
    by_group = {g[0]: g for g in raw["groups"]}
    assert by_group["giant"][4][:3] == [5000.0, 4500.0, 25.0]
    assert by_group["p"][5] == 5.0  # the minimum, for the negative-value check


def test_a_mean_needs_n_at_threshold_and_an_sd_needs_n_minus_1(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            # two small groups, so no secondary suppression clouds the rule under test
            "sector": ["ten"] * 10 + ["eleven"] * 11 + ["nine"] * 9 + ["eight"] * 8,
            "income": np.linspace(100, 130, 38),
        }
    )
    source = make_source(tmp_path, frame)
    # counts and means exact, so the values below can be checked
    exact = replace(POLICY, perturbation="rounding", rounding_base=1, magnitude_noise=0)
    output = summarise(source, exact)
    source.engine.dispose()

    groups = {g: rest for g, *rest in output.payload["groups"]}
    assert "nine" not in groups and "eight" not in groups  # n < 10: nothing, not even the label
    assert "hidden" not in output.payload
    assert groups["ten"][:2] == [10, pytest.approx(frame.income[:10].mean())]
    assert groups["ten"][2] is None  # n - 1 = 9 < 10: sd withheld
    assert groups["eleven"][2] == pytest.approx(frame.income[10:21].std(ddof=1))
    sd_rule = next(r for r in output.rules if r.rule == "sd_threshold")
    assert not sd_rule.passed and "1 group has n - 1 below 10" in sd_rule.detail
    assert any(r.rule == "extremes" and r.passed for r in output.rules)


def test_negative_values_hold_the_output_for_review(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sector": ["a"] * 20, "income": np.r_[-5.0, np.full(19, 40.0)]})
    source = make_source(tmp_path, frame)
    output = summarise(source)
    source.engine.dispose()

    assert output.outcome is Outcome.RELEASED  # the payload is what would leave...
    assert needs_review(output.rules)  # ...once the output checker approves it
    review = next(r for r in output.rules if r.rule == "review")
    assert "negative values" in review.detail


def test_combined_sd_is_withheld_where_a_node_withheld_its_sd() -> None:
    from fedtre.analyses.base import NodeOutput

    analysis = get_analysis("summary")
    params = {"column": "income", "by": None}
    outputs = {
        "a": NodeOutput(
            Outcome.SUPPRESSED, {"column": "income", "by": None, "groups": [[None, 10, 50.0, None]]}
        ),
        "b": NodeOutput(
            Outcome.RELEASED, {"column": "income", "by": None, "groups": [[None, 30, 60.0, 5.0]]}
        ),
    }
    combined = analysis.combine(params, outputs)
    [[_, n, mean, sd]] = combined["groups"]
    assert (n, mean, sd) == (40, pytest.approx(57.5), None)


# ----------------------------------------------------------------------------- per column


COLUMNS_SCHEMA = DatasetSchema(
    "firms", {"sector": "string", "income": "float", "staff": "integer", "listed": "boolean"}
)


@pytest.fixture
def columns_source(tmp_path: Path) -> DataSource:
    # income: one firm makes 95% of the total; staff: even; sector "small" leaves it out
    frame = pd.DataFrame(
        {
            "sector": ["big"] + ["small"] * 29,
            "income": np.r_[100_000.0, np.full(29, 150.0)],
            "staff": np.arange(30) % 7 + 10,
            "listed": [True, False] * 15,
        }
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'columns.db'}")
    frame.to_sql("firms", engine, index=False)
    table = sa.Table("firms", sa.MetaData(), autoload_with=engine)
    source = DataSource(engine, table, COLUMNS_SCHEMA)
    yield source
    engine.dispose()


def judged_columns(
    source: DataSource,
    columns: list[str],
    filter_: dict | None,
    policy: DisclosurePolicy,
    what: str = "the output",
) -> list:
    """NK and p% on each numeric column's total over the filter's complete cases, computed
    in SQL as correlation and the models do (contributors, then columns_dominance_rules)."""
    from fedtre.analyses.contributors import contribution, top_values_of_columns
    from fedtre.analyses.design import complete_cases
    from fedtre.disclosure.dominance import columns_dominance_rules

    table = source.table
    numeric = [c for c in columns if source.schema.columns[c] in ("integer", "float")]
    values = {c: sa.cast(table.c[c], sa.Double) for c in numeric}
    conditions = complete_cases(table, columns, filter_)
    with source.engine.connect() as conn:
        sums = conn.execute(
            sa.select(
                *(sa.func.sum(values[c]) for c in numeric),
                *(sa.func.min(values[c]) for c in numeric),
            ).where(*conditions)
        ).one()
        tops = top_values_of_columns(conn, values, conditions, limit=MAX_DOMINANCE_N)
    found = {
        c: contribution(sums[i], sums[len(numeric) + i], tops[c]) for i, c in enumerate(numeric)
    }
    return columns_dominance_rules(found, policy, what=what)


def test_column_totals_are_judged_per_column_in_sql(columns_source: DataSource) -> None:
    results = judged_columns(
        columns_source, ["income", "staff", "listed", "sector"], None, POLICY, what="the model"
    )

    failed = {r.rule: r.detail for r in results if not r.passed}
    assert set(failed) == {"nk_dominance", "p_percent"}
    assert "'income'" in failed["nk_dominance"] and "'staff'" not in failed["nk_dominance"]
    assert "the model" in failed["nk_dominance"]
    assert "100000" not in repr(results)  # details name columns, never values

    # The filter decides the records: without the big firm nothing is dominated
    small = {"col": "sector", "op": "==", "value": "small"}
    results = judged_columns(columns_source, ["income", "staff"], small, POLICY)
    assert all(r.passed for r in results)
    assert {r.rule for r in results} == {"nk_dominance", "p_percent"}


def test_column_dominance_respects_complete_cases_and_the_policy(
    columns_source: DataSource,
) -> None:
    from fedtre.analyses.contributors import contribution, top_values_of_columns
    from fedtre.disclosure.dominance import columns_dominance_rules

    # Turned off: nothing is judged
    off = DisclosurePolicy(dominance_n=0, p_percent=0)
    assert judged_columns(columns_source, ["income"], None, off) == []

    # compute / check halves, as an analysis would use them
    income = sa.cast(columns_source.table.c.income, sa.Double)
    with columns_source.engine.connect() as conn:
        total, minimum = conn.execute(sa.select(sa.func.sum(income), sa.func.min(income))).one()
        top = top_values_of_columns(conn, {"income": income}, [], limit=3)["income"]
    found = {"income": contribution(total, minimum, top)}
    assert found["income"]["top"] == [100_000.0, 150.0, 150.0]
    assert found["income"]["total"] == pytest.approx(100_000.0 + 29 * 150.0)
    assert found["income"]["minimum"] == 150.0
    negative = {"income": {**found["income"], "minimum": -1.0}}
    rules_ = columns_dominance_rules(negative, POLICY, what="x")
    assert needs_review(rules_)
