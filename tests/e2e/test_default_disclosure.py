"""With the default policy (threshold 10, cell-key noise) nothing small leaves an agent."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedtre.testing import LocalNetwork


@pytest.fixture(scope="module")
def network(parts):
    # tre-c holds only 7 people over 80: too few to release at the default threshold.
    tiny = parts["tre-c"].assign(age=90).head(7)
    data = {
        "tre-a": {"cohort": parts["tre-a"]},
        "tre-b": {"cohort": parts["tre-b"]},
        "tre-c": {"cohort": tiny},
    }
    with LocalNetwork(data) as net:
        yield net, tiny


def run(net, analysis, **params):
    with net.client() as client:
        return client.submit(analysis, dataset="cohort", params=params).result(timeout=60)


def test_small_count_is_suppressed_and_the_combined_count_withheld(network, parts):
    net, tiny = network
    result = run(net, "count", filter={"col": "age", "op": ">=", "value": 80})

    node = result.nodes["tre-c"]
    assert node.outcome in ("suppressed", "blocked")
    assert node.payload.get("n") is None
    # the cohort rule stops it before the count is taken: the filter selects < 10 records
    assert any(r.rule in ("cohort_size", "threshold") and not r.passed for r in node.rules)
    assert str(len(tiny)) not in json.dumps(node.payload)
    assert result.state == "partial"
    assert result.combined.get("n") is None


def test_released_counts_carry_consistent_bounded_noise(network, parts):
    # The default policy perturbs counts by the cell-key method (noise_deviation 3).
    net, _ = network
    result = run(net, "count")
    again = run(net, "count")

    for node in ("tre-a", "tre-b"):
        released = int(result.nodes[node].payload["n"])
        assert abs(released - len(parts[node])) <= 3
        assert int(again.nodes[node].payload["n"]) == released  # the same cohort, same answer


def test_crosstab_cells_below_threshold_are_withheld_and_others_perturbed(network, parts):
    net, _ = network
    result = run(net, "crosstab", rows="deprivation", columns="smoking")

    table = result.nodes["tre-a"].table
    truth = pd.crosstab(parts["tre-a"].deprivation.astype(str), parts["tre-a"].smoking)
    for row in truth.index:
        for col in truth.columns:
            if row not in table.index or col not in table.columns:
                continue  # a level with no released figure is dropped, label and all
            released = table.loc[row, col]
            if truth.loc[row, col] == 0:
                assert pd.isna(released) or released == 0
            elif truth.loc[row, col] < 10:
                assert pd.isna(released)
            elif not pd.isna(released):  # else withheld by secondary suppression
                assert abs(released - truth.loc[row, col]) <= 3 and released >= 10
    assert "hidden" not in result.nodes["tre-a"].payload


def test_summary_over_fewer_than_threshold_is_blocked(network):
    net, tiny = network
    result = run(net, "summary", column="sbp")

    node = result.nodes["tre-c"]
    assert node.outcome == "blocked"
    assert node.payload.get("groups", []) == []
    for value in tiny.sbp:
        assert str(value) not in json.dumps(node.payload)
    assert result.nodes["tre-a"].outcome == "released"
