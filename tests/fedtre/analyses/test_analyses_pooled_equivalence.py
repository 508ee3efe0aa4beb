"""Federated count, crosstab and summary equal the same computation on the pooled data."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import (
    EXACT,
    cohort,
    make_nodes,
    make_source,
    roundtrip,
    run_federated,
    split,
)

from fedtre.analyses import DatasetSchema, get_analysis
from fedtre.disclosure import DisclosurePolicy

POOLED_N = 600
SPLITS = {
    "2 nodes": [137, 463],
    "3 nodes": [40, 410, 150],
    "4 nodes": [250, 31, 199, 120],
}


@pytest.fixture(
    params=[(s, t) for s in SPLITS for t in ("reflected", "declared")],
    ids=lambda p: f"{p[0]}, {p[1]} table",
    scope="module",
)
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    sizes, style = request.param
    pooled = cohort(POOLED_N, seed=20240611)
    nodes = make_nodes(
        tmp_path_factory.mktemp("net"),
        split(pooled, SPLITS[sizes]),
        declared=style == "declared",
    )
    yield pooled, nodes
    for source in nodes.values():
        source.engine.dispose()


# Independent expectations: pandas masks written out by hand for each filter. SQL-side
# semantics: a comparison on a missing value is false, and `not` is an exact complement.
FILTERS: dict[str, tuple[Any, Any]] = {
    "no filter": (None, lambda d: pd.Series(True, index=d.index)),
    "age >= 40 and sex == F": (
        {
            "and": [
                {"col": "age", "op": ">=", "value": 40},
                {"col": "sex", "op": "==", "value": "F"},
            ]
        },
        lambda d: (d.age >= 40) & (d.sex == "F"),
    ),
    "not smoking in (current, former) or bmi is null": (
        {
            "or": [
                {"not": {"col": "smoking", "op": "in", "value": ["current", "former"]}},
                {"col": "bmi", "op": "is_null"},
            ]
        },
        lambda d: ~d.smoking.isin(["current", "former"]) | d.bmi.isna(),
    ),
    "visit_date >= 2018-01-01 and diabetic": (
        {
            "and": [
                {"col": "visit_date", "op": ">=", "value": "2018-01-01"},
                {"col": "diabetic", "op": "==", "value": True},
            ]
        },
        lambda d: (pd.to_datetime(d.visit_date) >= "2018-01-01") & d.diabetic,
    ),
}


def label(value: Any, ctype: str) -> str | None:
    """The label an analysis should give a pandas value of a column of type `ctype`."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if ctype == "boolean":
        return "true" if value else "false"
    if ctype == "integer":
        return str(int(value))
    return str(value)


TYPES = {"sex": "string", "smoking": "string", "diabetic": "boolean", "site": "integer"}


# Counts released exactly (rounding to 1, no cell-key noise), every rule off.
COUNTS_EXACT = DisclosurePolicy(
    threshold=0, perturbation="rounding", rounding_base=1, zeros_disclosive=False
)


@pytest.mark.parametrize("name", list(FILTERS))
def test_count_equals_pooled_count(network, name: str) -> None:
    # Given a cohort split unevenly across nodes
    pooled, nodes = network
    f, mask = FILTERS[name]
    params = {} if f is None else {"filter": f}

    # When every node counts and the coordinator combines
    result = run_federated(get_analysis("count"), params, nodes, COUNTS_EXACT)

    # Then the combined count is the pooled count, as an int after the Struct round trip
    expected = int(mask(pooled).sum())
    assert 0 < expected <= POOLED_N  # the filter selects something
    assert result["n"] == expected
    assert result["withheld_by"] == []
    assert result["nodes"] == {"included": sorted(nodes), "excluded": {}}


@pytest.mark.parametrize(
    ("rows", "columns", "filter_name"),
    [
        ("smoking", None, "no filter"),
        ("site", None, "age >= 40 and sex == F"),
        ("sex", "smoking", "no filter"),
        ("diabetic", "site", "not smoking in (current, former) or bmi is null"),
    ],
)
def test_crosstab_equals_pooled_table(network, rows, columns, filter_name) -> None:
    pooled, nodes = network
    f, mask = FILTERS[filter_name]
    params = {"rows": rows, "columns": columns, "filter": f}

    result = run_federated(get_analysis("crosstab"), params, nodes, COUNTS_EXACT)

    selected = pooled[mask(pooled)]
    expected = Counter(
        (label(r, TYPES[rows]), None if columns is None else label(c, TYPES[columns]))
        for r, c in zip(selected[rows], selected[columns or rows], strict=True)
    )
    got = {(r, c): n for r, c, n in result["cells"]}
    # A two-way table holds each node's full grid: combinations absent from the data are 0.
    assert {cell: n for cell, n in got.items() if n != 0} == dict(expected)
    assert all(cell not in expected for cell, n in got.items() if n == 0)
    assert all(isinstance(n, int) for n in got.values())
    assert result["withheld"] == []


def test_count_and_crosstab_under_noise_are_close_and_consistent(network) -> None:
    # Given the default cell-key perturbation (threshold 0 so every cell shows)
    pooled, nodes = network
    noisy = DisclosurePolicy(threshold=0, zeros_disclosive=False)
    bound = noisy.noise_deviation * len(nodes)

    count = run_federated(get_analysis("count"), {}, nodes, noisy)
    table = run_federated(get_analysis("crosstab"), {"rows": "smoking"}, nodes, noisy)

    # Then each combined figure is within (nodes) x D of the pooled one, and asking again
    # gives the same answers
    assert abs(count["n"] - POOLED_N) <= bound
    expected = Counter(label(v, "string") for v in pooled.smoking)
    for r, _, n in table["cells"]:
        assert abs(n - expected[r]) <= bound
    assert run_federated(get_analysis("count"), {}, nodes, noisy) == count
    assert run_federated(get_analysis("crosstab"), {"rows": "smoking"}, nodes, noisy) == table


def expected_summary(df: pd.DataFrame, column: str, by: str | None) -> dict[Any, tuple]:
    values = df[df[column].notna()]
    keys = [None] * len(values) if by is None else [label(v, TYPES[by]) for v in values[by]]
    out = {}
    for key in set(keys):
        x = values[column].to_numpy()[np.array([k == key for k in keys])]
        out[key] = (len(x), float(np.mean(x)), float(np.std(x, ddof=1)))
    return out


@pytest.mark.parametrize(
    ("by", "filter_name"),
    [
        (None, "no filter"),
        (None, "age >= 40 and sex == F"),
        ("sex", "no filter"),
        ("site", "visit_date >= 2018-01-01 and diabetic"),
        ("diabetic", "not smoking in (current, former) or bmi is null"),
    ],
)
@pytest.mark.parametrize("column", ["bmi", "age"])
def test_summary_equals_pooled_moments(network, column, by, filter_name) -> None:
    pooled, nodes = network
    f, mask = FILTERS[filter_name]
    params = {"column": column, "by": by, "filter": f}

    result = run_federated(get_analysis("summary"), params, nodes, EXACT)

    expected = expected_summary(pooled[mask(pooled)], column, by)
    got = {g: (n, mean, sd) for g, n, mean, sd in result["groups"]}
    assert set(got) == set(expected)
    for key, (n, mean, sd) in expected.items():
        assert got[key][0] == n
        assert isinstance(got[key][0], int)
        assert got[key][1] == pytest.approx(mean, rel=1e-9)
        assert got[key][2] == pytest.approx(sd, rel=1e-9)


def test_summary_variance_is_stable_far_from_zero(tmp_path) -> None:
    # Given values around one million with unit spread, where sum(x^2) - n*mean^2
    # cancels away most significant digits
    pooled = cohort(POOLED_N, seed=7)
    rng = np.random.default_rng(8)
    pooled["bmi"] = 1e6 + rng.normal(0.0, 1.0, POOLED_N)
    x = pooled.bmi.to_numpy()
    exact_sd = float(np.std(x, ddof=1))
    naive_var = (math.fsum(x * x) - POOLED_N * np.mean(x) ** 2) / (POOLED_N - 1)
    assert abs(math.sqrt(abs(naive_var)) - exact_sd) / exact_sd > 1e-6  # the data is hard
    nodes = make_nodes(tmp_path, split(pooled, [100, 350, 150]))

    result = run_federated(get_analysis("summary"), {"column": "bmi"}, nodes, EXACT)

    [[_, n, mean, sd]] = result["groups"]
    assert n == POOLED_N
    assert mean == pytest.approx(float(np.mean(x)), rel=1e-12)
    assert sd == pytest.approx(exact_sd, rel=1e-9)


def test_summary_of_a_single_value_group_has_null_sd(tmp_path) -> None:
    pooled = pd.DataFrame({"sex": ["F", "M", "M"], "bmi": [20.0, 22.0, 26.0]})
    schema = DatasetSchema("tiny", {"sex": "string", "bmi": "float"})
    nodes = {"a": make_source(tmp_path / "a.db", pooled, schema)}

    result = run_federated(get_analysis("summary"), {"column": "bmi", "by": "sex"}, nodes, EXACT)

    assert result["groups"] == [["F", 1, 20.0, None], ["M", 2, 24.0, pytest.approx(math.sqrt(8))]]


def test_summary_group_with_only_missing_values_does_not_appear(tmp_path) -> None:
    pooled = pd.DataFrame({"sex": ["F", "F", "M", "X", "X"], "bmi": [20.0, 22.0, 26.0, None, None]})
    schema = DatasetSchema("tiny", {"sex": "string", "bmi": "float"})
    nodes = {"a": make_source(tmp_path / "a.db", pooled, schema)}

    result = run_federated(get_analysis("summary"), {"column": "bmi", "by": "sex"}, nodes, EXACT)

    assert [g[0] for g in result["groups"]] == ["F", "M"]


def test_parameters_survive_the_struct_round_trip_unchanged() -> None:
    for name, params in [
        ("count", {"filter": FILTERS["age >= 40 and sex == F"][0]}),
        (
            "crosstab",
            {
                "rows": "sex",
                "columns": "smoking",
                "filter": {"col": "age", "op": "in", "value": [40, 41.5]},
            },
        ),
        ("summary", {"column": "bmi", "by": "site", "filter": None}),
    ]:
        analysis = get_analysis(name)
        once = analysis.validate(params)
        assert analysis.validate(roundtrip(once)) == once
