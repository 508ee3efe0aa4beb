"""Cohort identities, their differences, and the cohort rules, at and around the threshold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import DataSource
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.differencing import (
    Cohort,
    closest_difference,
    cohort_size_rule,
    decode_members,
    differencing_rule,
    encode_members,
    hash_rows,
    identity_scheme,
    measure_cohort,
    symmetric_difference,
)
from node_agent.sources.sql import open_sql_source

POLICY = DisclosurePolicy()
COLUMNS = {"age": "integer", "sex": "string"}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[DataSource]:
    # 60 people aged 20..79; two of them share every declared value (age 50, F)
    frame = pd.DataFrame(
        {
            "pid": [f"p{i:03d}" for i in range(61)],
            "age": [*range(20, 80), 50],
            "sex": ["F" if a % 2 == 0 else "M" for a in range(20, 80)] + ["F"],
        }
    )
    path = tmp_path / "people.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    frame.to_sql("people", engine, index=False)
    engine.dispose()
    s = open_sql_source("people", f"sqlite:///{path}", "people", COLUMNS)
    yield s
    s.engine.dispose()


def age_at_least(n: int) -> dict:
    return {"col": "age", "op": ">=", "value": n}


def test_symmetric_difference_counts_a_multiset() -> None:
    a = hash_rows([(1,), (2,), (2,), (3,)])
    b = hash_rows([(2,), (3,), (4,)])
    assert symmetric_difference(a, b) == 3  # one 1, one of the two 2s, and the 4
    assert symmetric_difference(a, a) == 0


def test_members_survive_encoding() -> None:
    members = hash_rows([(i, "x") for i in range(1000)])
    assert np.array_equal(decode_members(encode_members(members)), members)


def test_cohort_by_key_column_and_by_declared_values(source: DataSource) -> None:
    by_key = measure_cohort(source, age_at_least(50), None, key="pid", filtered=True)
    by_values = measure_cohort(source, age_at_least(50), None, filtered=True)

    assert by_key.size == by_values.size == 31
    assert by_key.universe == 61
    assert by_key.scheme == "key:pid" and by_values.scheme.startswith("values:")
    # the two people with identical declared values hash alike, but are both counted
    assert len(np.unique(by_values.members)) == 30
    assert identity_scheme(source, None) == by_values.scheme


@pytest.mark.parametrize(
    ("size", "universe", "passed", "fragment"),
    [
        (10, 20, True, "at least 10"),
        (9, 20, False, "selects fewer than 10"),
        (10, 19, False, "leaves out fewer than 10"),
    ],
)
def test_cohort_size_rule_checks_the_cohort_and_its_complement(
    size: int, universe: int, passed: bool, fragment: str
) -> None:
    cohort = Cohort(size, universe, True, "key:x", np.zeros(size, dtype=np.uint64))
    rule = cohort_size_rule(cohort, POLICY)
    assert rule.passed is passed and fragment in rule.detail


def test_an_unfiltered_output_needs_no_complement() -> None:
    cohort = Cohort(12, 12, False, "key:x", np.zeros(12, dtype=np.uint64))
    assert cohort_size_rule(cohort, POLICY).passed


@pytest.mark.parametrize(("removed", "blocked"), [(0, False), (1, True), (9, True), (10, False)])
def test_differences_between_1_and_threshold_minus_1_are_blocked(
    removed: int, blocked: bool
) -> None:
    everyone = hash_rows([(i,) for i in range(50)])
    fewer = hash_rows([(i,) for i in range(removed, 50)])
    cohort = Cohort(len(fewer), 50, True, "key:x", fewer)

    closest = closest_difference(cohort, [everyone], POLICY)

    assert (closest is not None) is blocked
    assert differencing_rule(closest, POLICY).passed is (not blocked)


def test_an_added_record_is_a_difference_too() -> None:
    base = hash_rows([(i,) for i in range(30)])
    more = hash_rows([(i,) for i in range(31)])
    cohort = Cohort(31, 60, True, "key:x", more)
    assert closest_difference(cohort, [base], POLICY) == 1


def test_swapping_one_record_for_another_is_a_difference_of_two() -> None:
    a = hash_rows([(i,) for i in range(30)])
    b = hash_rows([*((i,) for i in range(29)), (99,)])
    assert symmetric_difference(a, b) == 2
    assert closest_difference(Cohort(30, 60, True, "k", b), [a], POLICY) == 2


def test_the_rules_never_state_a_count() -> None:
    cohort = Cohort(7, 40, True, "key:x", np.zeros(7, dtype=np.uint64))
    assert "7" not in cohort_size_rule(cohort, POLICY).detail
    assert "3" not in differencing_rule(3, POLICY).detail
