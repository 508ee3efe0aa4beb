"""Federated answers over three agents equal the same computation on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

OVER_50_SMOKERS = {
    "and": [
        {"col": "age", "op": ">=", "value": 50},
        {"col": "smoking", "op": "!=", "value": "never"},
    ]
}


def run(net, analysis, **params):
    with net.client() as client:
        return client.submit(analysis, dataset="cohort", params=params).result(timeout=60)


def test_count_with_filter_equals_pooled(permissive_network, pooled):
    result = run(permissive_network, "count", filter=OVER_50_SMOKERS)

    expected = int(((pooled.age >= 50) & (pooled.smoking != "never")).sum())
    assert result.state == "completed"
    assert int(result.combined["n"]) == expected
    assert {p.outcome for p in result.nodes.values()} == {"released"}


def test_count_without_filter_is_the_pooled_size(permissive_network, pooled):
    result = run(permissive_network, "count")

    assert int(result.combined["n"]) == len(pooled)


def test_a_count_reads_as_an_int_not_a_float(permissive_network, pooled, parts):
    # The wire carries every number as a double; a count must not read as 1200.0.
    result = run(permissive_network, "count")

    assert type(result.combined["n"]) is int and result.combined["n"] == len(pooled)
    for node, part in parts.items():
        n = result.nodes[node].payload["n"]
        assert type(n) is int and n == len(part)


def test_one_way_crosstab_equals_pooled(permissive_network, pooled):
    frame = run(permissive_network, "crosstab", rows="smoking").to_frame()

    expected = pooled.smoking.value_counts()
    assert sorted(frame.index) == sorted(expected.index)
    for level, n in expected.items():
        assert frame.loc[level, "n"] == n


def test_two_way_crosstab_with_integer_levels_equals_pooled(permissive_network, pooled):
    subset = pooled[pooled.age < 60]
    frame = run(
        permissive_network,
        "crosstab",
        rows="deprivation",
        columns="sex",
        filter={"col": "age", "op": "<", "value": 60},
    ).to_frame()

    expected = pd.crosstab(subset.deprivation.astype(str), subset.sex)
    assert sorted(frame.index) == sorted(expected.index)
    assert sorted(frame.columns) == sorted(expected.columns)
    for row in expected.index:
        for col in expected.columns:
            assert frame.loc[row, col] == expected.loc[row, col], (row, col)


def test_summary_equals_pooled(permissive_network, pooled):
    frame = run(permissive_network, "summary", column="bmi").to_frame()

    values = pooled.bmi.dropna()
    row = frame.iloc[0]
    assert row["n"] == len(values)
    assert row["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert row["sd"] == pytest.approx(values.std(ddof=1), rel=1e-9)


def test_summary_by_group_with_filter_equals_pooled(permissive_network, pooled):
    frame = run(
        permissive_network,
        "summary",
        column="sbp",
        by="smoking",
        filter={"col": "bmi", "op": "not_null"},
    ).to_frame()

    subset = pooled[pooled.bmi.notna()]
    expected = subset.groupby("smoking").sbp.agg(["count", "mean", lambda s: np.std(s, ddof=1)])
    expected.columns = ["n", "mean", "sd"]
    assert sorted(frame.index) == sorted(expected.index)
    for group, want in expected.iterrows():
        assert frame.loc[group, "n"] == want["n"]
        assert frame.loc[group, "mean"] == pytest.approx(want["mean"], rel=1e-9)
        assert frame.loc[group, "sd"] == pytest.approx(want["sd"], rel=1e-9)


def test_per_node_outputs_are_each_nodes_own_answer(permissive_network, parts):
    result = run(permissive_network, "count")

    for node, part in parts.items():
        assert int(result.nodes[node].payload["n"]) == len(part)
