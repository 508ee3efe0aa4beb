"""Federated histogram, correlation and quantiles against numpy on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import run_federated
from model_testkit import make_model_nodes, model_cohort, split_with_single_level

from fedtre.analyses import get_analysis
from fedtre.disclosure import DisclosurePolicy

POOLED_N = 900
SPLITS = {
    "2 nodes": [200, 700],
    "3 nodes": [90, 510, 300],
    "5 nodes": [60, 300, 70, 350, 120],
}


@pytest.fixture(params=list(SPLITS), scope="module")
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    pooled = model_cohort(POOLED_N, seed=11)
    parts = split_with_single_level(pooled, SPLITS[request.param], "smoking", "never")
    nodes = make_model_nodes(tmp_path_factory.mktemp("dist"), parts)
    yield pd.concat(parts, ignore_index=True), nodes
    for source in nodes.values():
        source.engine.dispose()


# -- histogram ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "edges"),
    [
        ("bmi", [15.0, 20.0, 25.0, 27.5, 30.0, 35.0, 45.0]),
        # integer values on the edges; the last bin is closed (89 counts), 19 is outside
        ("age", [20, 30, 40, 50, 60, 70, 80, 89]),
        ("visits", [0, 1, 2, 3, 5, 10]),
    ],
)
def test_histogram_with_fixed_edges_equals_numpy(network, column: str, edges: list[float]) -> None:
    pooled, nodes = network

    result = run_federated(get_analysis("histogram"), {"column": column, "edges": edges}, nodes)

    expected, _ = np.histogram(pooled[column].dropna(), bins=edges)
    assert result["counts"] == expected.tolist()
    assert result["edges"] == [float(e) for e in edges]
    assert result["withheld"] == []


@pytest.mark.parametrize(("column", "width", "origin"), [("bmi", 2.5, 0.3), ("age", 5, 0)])
def test_histogram_with_a_shared_width_equals_numpy(network, column, width, origin) -> None:
    pooled, nodes = network

    result = run_federated(
        get_analysis("histogram"), {"column": column, "width": width, "origin": origin}, nodes
    )

    values = pooled[column].dropna().to_numpy()
    edges = np.asarray(result["edges"])
    # the grid: origin + i width, spanning the pooled data, rounded outward
    steps = (edges - origin) / width
    assert np.allclose(steps, np.round(steps))
    assert edges[0] <= values.min() and values.max() < edges[-1]
    assert edges[1] > values.min() and edges[-2] <= values.max()
    # numpy's last bin is closed: count half-open bins by hand
    index = np.floor((values - origin) / width) - round(steps[0])
    expected = np.bincount(index.astype(int), minlength=len(edges) - 1)
    assert result["counts"] == expected.tolist()


def test_histogram_with_filter_equals_numpy(network) -> None:
    pooled, nodes = network
    f = {"or": [{"col": "sex", "op": "==", "value": "F"}, {"col": "age", "op": "<", "value": 40}]}
    edges = [10.0, 20.0, 25.0, 30.0, 50.0]

    result = run_federated(
        get_analysis("histogram"), {"column": "bmi", "edges": edges, "filter": f}, nodes
    )

    subset = pooled[(pooled.sex == "F") | (pooled.age < 40)].bmi.dropna()
    assert result["counts"] == np.histogram(subset, bins=edges)[0].tolist()


# -- correlation ----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [["age", "bmi"], ["age", "bmi", "sbp", "visits", "time"]])
def test_correlation_equals_numpy_corrcoef(network, columns: list[str]) -> None:
    pooled, nodes = network

    result = run_federated(get_analysis("correlation"), {"columns": columns}, nodes)

    complete = pooled[columns].dropna()
    expected = np.corrcoef(complete.to_numpy(dtype=float).T)
    assert result["n"] == len(complete)
    assert np.allclose(result["matrix"], expected, rtol=1e-12, atol=1e-14)
    assert result["columns"] == columns


def test_correlation_with_filter_and_far_from_zero_values(network, tmp_path) -> None:
    # values around a million with unit spread: the naive formula loses every digit
    pooled, _ = network
    shifted = pooled.assign(sbp=pooled.sbp + 1e6)
    nodes = make_model_nodes(tmp_path, [shifted.iloc[:100], shifted.iloc[100:]])
    f = {"col": "age", "op": "<", "value": 70}

    result = run_federated(
        get_analysis("correlation"), {"columns": ["sbp", "bmi"], "filter": f}, nodes
    )

    complete = shifted[shifted.age < 70][["sbp", "bmi"]].dropna()
    expected = np.corrcoef(complete.to_numpy(dtype=float).T)
    assert result["n"] == len(complete)
    assert np.allclose(result["matrix"], expected, rtol=1e-9, atol=1e-12)


# -- quantiles ------------------------------------------------------------------------------

PROBS = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]


@pytest.mark.parametrize(("column", "width"), [("bmi", 0.5), ("bmi", 0.01), ("age", 1), ("sbp", 3)])
def test_quantiles_bracket_the_pooled_quantiles(network, column: str, width: float) -> None:
    pooled, nodes = network

    result = run_federated(
        get_analysis("quantiles"), {"column": column, "width": width, "probs": PROBS}, nodes
    )

    values = np.sort(pooled[column].dropna().to_numpy())
    expected = np.quantile(values, PROBS)  # numpy's default: linear interpolation
    assert result["n"] == len(values)
    for (q, estimate, lower, upper), exact in zip(result["quantiles"], expected, strict=True):
        # the documented bound: lower <= pooled quantile <= upper; with threshold 0 the
        # bracket runs from the grid bin of the order statistic below the quantile to the
        # bin of the one above: at most 2 widths plus the gap between those two values
        assert lower <= exact <= upper, (q, lower, exact, upper)
        assert lower <= estimate <= upper
        h = q * (len(values) - 1)
        gap = values[int(np.ceil(h))] - values[int(np.floor(h))]
        assert upper - lower <= (2 * width + gap) * (1 + 1e-12), (q, lower, upper)


@pytest.mark.parametrize("threshold", [10, 25])
def test_quantile_brackets_hold_under_the_default_policy(network, threshold: int) -> None:
    pooled, nodes = network
    policy = DisclosurePolicy(threshold=threshold)

    result = run_federated(
        get_analysis("quantiles"),
        {"column": "bmi", "width": 0.1, "probs": [0.05, 0.25, 0.5, 0.75, 0.95]},
        nodes,
        policy,
    )

    values = pooled.bmi.dropna().to_numpy()
    expected = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    for (_, estimate, lower, upper), exact in zip(result["quantiles"], expected, strict=True):
        assert lower <= exact <= upper
        assert lower <= estimate <= upper
