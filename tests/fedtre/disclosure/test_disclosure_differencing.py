"""The differencing memory's sketches (computed by the engine), their differences, and the
cohort rules, at and around the threshold."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import DatasetSchema, DataSource
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.cellkey import ID_PRIME, keyed_source
from fedtre.disclosure.differencing import (
    Bins,
    Cohort,
    Edges,
    canonical_predicate,
    cohort_size_rule,
    decode_sketch,
    differencing_rule,
    encode_sketch,
    identity_scheme,
    measure_cohort,
    sketch_of_ids,
    span_label,
    symmetric_difference,
)
from node_agent.sources.sql import open_sql_source

POLICY = DisclosurePolicy()
COLUMNS = {"age": "integer", "sex": "string"}
SECRET = b"s" * 32


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


def _ids(source: DataSource, where: sa.ColumnElement[bool] | None = None) -> list[int]:
    assert source.record_id is not None
    query = sa.select(source.record_id)
    if where is not None:
        query = query.where(where)
    with source.engine.connect() as conn:
        return [int(x) for x in conn.execute(query).scalars()]


def test_the_engine_computes_the_sketch_of_the_cohorts_record_ids(source: DataSource) -> None:
    keyed = keyed_source(source, SECRET, "pid")
    cohort = measure_cohort(keyed, age_at_least(50), None, key="pid", filtered=True)
    ids = _ids(keyed, keyed.table.c.age >= 50)
    assert cohort.size == len(ids) == 31
    assert cohort.universe == 61
    assert np.array_equal(cohort.sketch, sketch_of_ids(ids))


def test_groups_are_sketched_one_by_one(source: DataSource) -> None:
    keyed = keyed_source(source, SECRET, None)
    cohort = measure_cohort(keyed, age_at_least(50), None, filtered=True, groupings=[("sex",)])
    by_size = sorted(group.size for group in cohort.groups)
    assert by_size == [15, 16]  # 15 men and 15 + the duplicate woman
    for group in cohort.groups:
        difference = symmetric_difference(cohort.sketch, group.sketch, limit=100)
        assert difference == cohort.size - group.size
    # each group is remembered under its own question: the filter and its level
    assert len({g.predicate for g in cohort.groups} | {cohort.predicate}) == 3


def test_bins_are_groups_and_a_union_of_bins_is_the_sum_of_their_sketches(
    source: DataSource,
) -> None:
    keyed = keyed_source(source, SECRET, None)
    bins = Bins("age", 0.0, 10.0)
    cohort = measure_cohort(keyed, None, None, filtered=False, groupings=[(bins,)])
    # an inner bin: the records of its range, remembered as the filter of that range
    (forties,) = cohort.released_groups({((bins,), (span_label(4, 5),))})
    assert forties.labels == ("4",)
    assert np.array_equal(
        forties.sketch, sketch_of_ids(_ids(keyed, keyed.table.c.age.between(40, 49)))
    )
    in_range = {"and": [{"col": "age", "op": "<", "value": 50}, age_at_least(40)]}
    assert forties.predicate == canonical_predicate(in_range)
    # an open bin: the sum of the bins' sketches, remembered as the filter of its range
    (under_40,) = cohort.released_groups({((bins,), (span_label(None, 4),))})
    ids = _ids(keyed, keyed.table.c.age < 40)
    assert under_40.size == len(ids) == 20
    assert np.array_equal(under_40.sketch, sketch_of_ids(ids))
    assert under_40.predicate == canonical_predicate({"col": "age", "op": "<", "value": 40})
    # fixed edges: the last is closed, and the open bins stop at the first and last edge
    edges = Edges("age", (30.0, 40.0, 60.0))
    cohort = measure_cohort(keyed, None, None, filtered=False, groupings=[(edges,)])
    (upper,) = cohort.released_groups({((edges,), (span_label(1, None),))})
    assert upper.size == 22  # 40..60, and the second 50-year-old
    closed = {"and": [age_at_least(40), {"col": "age", "op": "<=", "value": 60}]}
    assert upper.predicate == canonical_predicate(closed)


def test_a_rewrite_of_the_same_question_has_the_same_predicate() -> None:
    older_women = {
        "and": [
            {"col": "age", "op": ">=", "value": 50},
            {"col": "sex", "op": "==", "value": "F"},
        ]
    }
    regrouped = {
        "and": [
            {"col": "sex", "op": "==", "value": "F"},
            {"and": [{"col": "age", "op": ">=", "value": 50.0}]},
        ]
    }
    as_group = canonical_predicate(
        {"col": "age", "op": ">=", "value": 50}, [{"col": "sex", "op": "==", "value": "F"}]
    )
    assert canonical_predicate(older_women) == canonical_predicate(regrouped) == as_group
    assert canonical_predicate(older_women) != canonical_predicate(
        {"col": "age", "op": ">", "value": 49}
    )


@pytest.mark.parametrize("difference", [0, 1, 2, 5, 9])
def test_small_differences_are_listed_exactly(difference: int) -> None:
    rng = random.Random(difference)
    for _ in range(200):
        base = rng.sample(range(1, ID_PRIME), 500)
        removed = rng.randint(0, difference)
        other = base[removed:] + [rng.randrange(1, ID_PRIME) for _ in range(difference - removed)]
        d = symmetric_difference(sketch_of_ids(base), sketch_of_ids(other), limit=10)
        assert d == difference


@pytest.mark.parametrize("difference", [10, 11, 40, 400])
def test_differences_at_or_above_the_limit_are_reported_as_such(difference: int) -> None:
    rng = random.Random(difference)
    for _ in range(50):
        base = rng.sample(range(1, ID_PRIME), 1000)
        other = base[difference:]
        assert symmetric_difference(sketch_of_ids(base), sketch_of_ids(other), limit=10) is None


def test_duplicate_ids_count_as_a_multiset() -> None:
    a = sketch_of_ids([1, 2, 2, 3])
    b = sketch_of_ids([2, 3, 4])
    assert symmetric_difference(a, b, limit=10) == 3  # one 1, one of the two 2s, and the 4
    assert symmetric_difference(a, a, limit=10) == 0


def test_sketches_survive_encoding_and_their_size_does_not_grow_with_the_set() -> None:
    small, large = sketch_of_ids(range(1, 20)), sketch_of_ids(range(1, 20_000))
    assert np.array_equal(decode_sketch(encode_sketch(large)), large)
    assert len(encode_sketch(small)) == len(encode_sketch(large))


def test_the_identity_scheme_names_the_key_or_the_declared_columns(source: DataSource) -> None:
    assert identity_scheme(source, "pid").endswith("key:pid")
    assert ":values:" in identity_scheme(source, None)


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
    cohort = Cohort(size, universe, True, "key:x", sketch_of_ids(range(1, size + 1)))
    rule = cohort_size_rule(cohort, POLICY)
    assert rule.passed is passed and fragment in rule.detail


def test_an_unfiltered_output_needs_no_complement() -> None:
    cohort = Cohort(12, 12, False, "key:x", sketch_of_ids(range(1, 13)))
    assert cohort_size_rule(cohort, POLICY).passed


@pytest.mark.parametrize(("removed", "blocked"), [(0, False), (1, True), (9, True), (10, False)])
def test_differences_between_1_and_threshold_minus_1_are_blocked(
    removed: int, blocked: bool
) -> None:
    everyone = sketch_of_ids(range(1, 51))
    cohort = Cohort(50 - removed, 50, True, "key:x", sketch_of_ids(range(1 + removed, 51)))

    found = symmetric_difference(cohort.sketch, everyone, limit=POLICY.threshold)
    closest = found if found else None

    assert (closest is not None) is blocked
    assert differencing_rule(closest, POLICY).passed is (not blocked)


def test_swapping_one_record_for_another_is_a_difference_of_two() -> None:
    a = sketch_of_ids(range(1, 31))
    b = sketch_of_ids([*range(1, 30), 99])
    assert symmetric_difference(b, a, limit=POLICY.threshold) == 2


def test_the_rules_never_state_a_count() -> None:
    cohort = Cohort(7, 40, True, "key:x", sketch_of_ids(range(1, 8)))
    assert "7" not in cohort_size_rule(cohort, POLICY).detail
    assert "3" not in differencing_rule(3, POLICY).detail


def _spark_source(frame: pd.DataFrame, columns: dict[str, str], tmp_path: Path) -> DataSource:
    """The frame as a Parquet file read by Spark SQL, as the agent opens it."""
    import duckdb

    from node_agent.config import DatasetConfig
    from node_agent.sources import open_source

    path = tmp_path / "sketch_agree.parquet"
    with duckdb.connect() as conn:
        conn.register("frame", frame)
        conn.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
    dataset = DatasetConfig("sketch_agree", columns, parquet=path, engine="spark")
    return open_source(dataset, tmp_path)


@pytest.mark.parametrize("engine_kind", ["duckdb", "postgresql", "spark"])
def test_every_engine_sketches_the_same_records_alike(
    engine_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given one table of a text, an integer and a float column in SQLite and in another
    # engine (bmi on bin edges, inside bins, negative, missing)
    bmi = [None, 17.5, 20.0, 24.99, 25.0, 31.2, -3.0, 40.0, 45.5, 29.999] * 12
    frame = pd.DataFrame(
        {"smoking": ["a", "b", "c", None] * 30, "diabetes": [0, 1, 1] * 40, "bmi": bmi}
    )
    columns = {"smoking": "string", "diabetes": "integer", "bmi": "float"}
    urls = {
        "sqlite": f"sqlite:///{tmp_path / 'a.sqlite'}",
        "duckdb": "duckdb:///:memory:",
        "postgresql": request.getfixturevalue("pg_url") if engine_kind == "postgresql" else "",
    }
    if engine_kind == "spark":
        request.getfixturevalue("spark_master")
    measured = []
    for kind in ("sqlite", engine_kind):
        if kind == "spark":
            base = _spark_source(frame, columns, tmp_path)
            engine = base.engine
        else:
            engine = sa.create_engine(urls[kind])
            frame.to_sql("sketch_agree", engine, index=False, if_exists="replace")
            table = sa.Table(
                "sketch_agree",
                sa.MetaData(),
                sa.Column("smoking", sa.String),
                sa.Column("diabetes", sa.Integer),
                sa.Column("bmi", sa.Float),
            )
            base = DataSource(engine, table, DatasetSchema("d", columns))
        # When each measures a two-way table's cohort with its cells and margins, and
        # bins of width 5 (origin 2.5) and of fixed edges (the last one closed)
        measured.append(
            measure_cohort(
                keyed_source(base, SECRET, None),
                {"col": "diabetes", "op": "==", "value": 1},
                None,
                filtered=True,
                groupings=[
                    ("smoking", "diabetes"),
                    ("smoking",),
                    ("diabetes",),
                    (Bins("bmi", 2.5, 5.0),),
                    (Edges("bmi", (0.0, 20.0, 25.0, 40.0)),),
                ],
            )
        )
        engine.dispose()
    # Then the cohort and every group have the same sketch, labels and question
    first, second = measured
    assert first.digest == second.digest and first.size == 80
    key = lambda g: (repr(g.grouping), tuple(str(x) for x in g.labels))  # noqa: E731
    assert [(key(g), g.size, g.predicate) for g in sorted(first.groups, key=key)] == [
        (key(g), g.size, g.predicate) for g in sorted(second.groups, key=key)
    ]
    assert all(
        np.array_equal(a.sketch, b.sketch)
        for a, b in zip(sorted(first.groups, key=key), sorted(second.groups, key=key), strict=True)
    )
    # and the bins are those of the values (NULL and out-of-range values in none)
    bins = {g.labels: g.size for g in first.groups if isinstance(g.grouping[0], Bins)}
    edges = {g.labels: g.size for g in first.groups if isinstance(g.grouping[0], Edges)}
    sizes = frame[frame["diabetes"] == 1].groupby("bmi").size().to_dict()
    assert bins == {
        ("-2",): sizes[-3.0],  # [-7.5, -2.5)
        ("3",): sizes[17.5] + sizes[20.0],  # [17.5, 22.5)
        ("4",): sizes[24.99] + sizes[25.0],
        ("5",): sizes[31.2] + sizes[29.999],
        ("7",): sizes[40.0],
        ("8",): sizes[45.5],
    }
    assert edges == {
        ("0",): sizes[17.5],
        ("1",): sizes[20.0] + sizes[24.99],
        ("2",): sizes[25.0] + sizes[31.2] + sizes[40.0] + sizes[29.999],
    }
