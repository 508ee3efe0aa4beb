"""Federated histogram, correlation and quantiles against numpy on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import EXACT, run_federated
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

# The TRE's grids for the histogram columns (edges and widths are multiples of these).
HISTOGRAM_GRIDS = {"bmi": 0.1, "age": 1.0, "visits": 1.0}
# Counts released exactly (rounding to 1, no cell-key noise), every rule off.
EXACT_BINS = DisclosurePolicy(
    threshold=0, perturbation="rounding", rounding_base=1, zeros_disclosive=False
)


def gridded(nodes):
    """The nodes, declaring HISTOGRAM_GRIDS."""
    import dataclasses

    return {
        node: dataclasses.replace(
            source, schema=dataclasses.replace(source.schema, grids=HISTOGRAM_GRIDS)
        )
        for node, source in nodes.items()
    }


def pooled_bins(values: np.ndarray, bins: list, edges: list[float] | None = None) -> list[int]:
    """The pooled count in each released bin (open ends: from e0 / to ek with edges)."""
    values = np.asarray(values, dtype=float)
    if edges is not None:
        values = values[(values >= edges[0]) & (values <= edges[-1])]
    counts = []
    for lo, hi, _ in bins:
        inside = np.ones(len(values), dtype=bool)
        if lo is not None:
            inside &= values >= lo
        if hi is not None:
            inside &= values < hi
        counts.append(int(inside.sum()))
    return counts


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

    result = run_federated(
        get_analysis("histogram"), {"column": column, "edges": edges}, gridded(nodes), EXACT_BINS
    )

    bins = result["bins"]
    assert bins[0][0] is None and bins[-1][1] is None  # the outer bins are open
    inner = [lo for lo, _, _ in bins[1:]]
    assert set(inner) <= {float(e) for e in edges}
    assert [n for _, _, n in bins] == pooled_bins(pooled[column].dropna(), bins, edges)
    assert sum(n for _, _, n in bins) == int(np.histogram(pooled[column].dropna(), edges)[0].sum())
    assert result["withheld"] == []


@pytest.mark.parametrize(("column", "width", "origin"), [("bmi", 2.5, 0.3), ("age", 5, 0)])
def test_histogram_with_a_shared_width_equals_numpy(network, column, width, origin) -> None:
    pooled, nodes = network

    result = run_federated(
        get_analysis("histogram"),
        {"column": column, "width": width, "origin": origin},
        gridded(nodes),
        EXACT_BINS,
    )

    values = pooled[column].dropna().to_numpy()
    bins = result["bins"]
    inner = np.asarray([lo for lo, _, _ in bins[1:]])
    # the grid: origin + i width; no edge wraps the data (the outer bins are open)
    steps = (inner - origin) / width
    assert np.allclose(steps, np.round(steps))
    assert bins[0][0] is None and bins[-1][1] is None
    assert inner.min() > values.min() and inner.max() <= values.max()
    assert [n for _, _, n in bins] == pooled_bins(values, bins)
    assert len(bins) > 3


def test_histogram_with_filter_equals_numpy(network) -> None:
    pooled, nodes = network
    f = {"or": [{"col": "sex", "op": "==", "value": "F"}, {"col": "age", "op": "<", "value": 40}]}
    edges = [10.0, 20.0, 25.0, 30.0, 50.0]

    result = run_federated(
        get_analysis("histogram"),
        {"column": "bmi", "edges": edges, "filter": f},
        gridded(nodes),
        EXACT_BINS,
    )

    subset = pooled[(pooled.sex == "F") | (pooled.age < 40)].bmi.dropna()
    assert [n for _, _, n in result["bins"]] == pooled_bins(subset, result["bins"], edges)


# -- correlation ----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [["age", "bmi"], ["age", "bmi", "sbp", "visits", "time"]])
def test_correlation_equals_numpy_corrcoef(network, columns: list[str]) -> None:
    pooled, nodes = network

    result = run_federated(get_analysis("correlation"), {"columns": columns}, nodes, EXACT)

    complete = pooled[columns].dropna()
    expected = np.corrcoef(complete.to_numpy(dtype=float).T)
    assert result["n"] == len(complete)
    assert np.allclose(result["matrix"], expected, rtol=1e-12, atol=1e-14)
    assert result["columns"] == columns


def test_correlation_stays_exact_under_count_noise(network) -> None:
    # Given the default cell-key perturbation of counts (threshold 0, no dominance)
    pooled, nodes = network
    columns = ["age", "bmi", "sbp"]
    noisy = DisclosurePolicy(threshold=0, zeros_disclosive=False, dominance_n=0, p_percent=0)

    result = run_federated(get_analysis("correlation"), {"columns": columns}, nodes, noisy)

    # Then the matrix is still the pooled one (pooled from exact model statistics) while
    # the n shown is the sum of the nodes' perturbed counts
    complete = pooled[columns].dropna()
    expected = np.corrcoef(complete.to_numpy(dtype=float).T)
    assert np.allclose(result["matrix"], expected, rtol=1e-12, atol=1e-14)
    assert abs(result["n"] - len(complete)) <= noisy.noise_deviation * len(nodes)


def test_correlation_with_filter_and_far_from_zero_values(network, tmp_path) -> None:
    # values around a million with unit spread: the naive formula loses every digit
    pooled, _ = network
    shifted = pooled.assign(sbp=pooled.sbp + 1e6)
    nodes = make_model_nodes(tmp_path, [shifted.iloc[:100], shifted.iloc[100:]])
    f = {"col": "age", "op": "<", "value": 70}

    result = run_federated(
        get_analysis("correlation"), {"columns": ["sbp", "bmi"], "filter": f}, nodes, EXACT
    )

    complete = shifted[shifted.age < 70][["sbp", "bmi"]].dropna()
    expected = np.corrcoef(complete.to_numpy(dtype=float).T)
    assert result["n"] == len(complete)
    assert np.allclose(result["matrix"], expected, rtol=1e-9, atol=1e-12)


# -- quantiles ------------------------------------------------------------------------------

PROBS = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]
# The TRE's grids for the quantile columns: widths are whole multiples of these.
QUANTILE_GRIDS = {"bmi": 0.01, "age": 1.0, "sbp": 1.0}
EXACT_QUANTILES = DisclosurePolicy(
    threshold=0, perturbation="rounding", rounding_base=1, zeros_disclosive=False
)


def with_grids(nodes):
    """The nodes, declaring QUANTILE_GRIDS (bounds are released on these grids only)."""
    import dataclasses

    return {
        node: dataclasses.replace(
            source, schema=dataclasses.replace(source.schema, grids=QUANTILE_GRIDS)
        )
        for node, source in nodes.items()
    }


@pytest.mark.parametrize(("column", "width"), [("bmi", 0.5), ("bmi", 0.01), ("age", 1), ("sbp", 3)])
def test_quantiles_bracket_the_pooled_quantiles(network, column: str, width: float) -> None:
    pooled, nodes = network

    result = run_federated(
        get_analysis("quantiles"),
        {"column": column, "width": width, "probs": PROBS},
        with_grids(nodes),
        EXACT_QUANTILES,
    )

    values = np.sort(pooled[column].dropna().to_numpy())
    expected = np.quantile(values, PROBS)  # numpy's default: linear interpolation
    assert result["n"] == len(values)
    for (q, estimate, lower, upper), exact in zip(result["quantiles"], expected, strict=True):
        # the documented bound: lower <= pooled quantile <= upper, a side in an open outer
        # interval being null; with threshold 0 the bracket runs from the grid bin of the
        # order statistic below the quantile to the bin of the one above: at most 2 widths
        # plus the gap between those two values (away from the open outer intervals)
        assert lower is None or lower <= exact, (q, lower, exact)
        assert upper is None or exact <= upper, (q, exact, upper)
        if lower is None or upper is None:
            assert estimate is None
            continue
        assert lower <= estimate <= upper
        if not 0.1 <= q <= 0.9:
            continue  # near the tails a node's open outer interval widens the bracket
        h = q * (len(values) - 1)
        gap = values[int(np.ceil(h))] - values[int(np.floor(h))]
        assert upper - lower <= (2 * width + gap) * (1 + 1e-12), (q, lower, upper)


@pytest.mark.parametrize("threshold", [10, 25])
def test_quantile_brackets_hold_with_a_threshold(network, threshold: int) -> None:
    # Given a threshold with exact counts (rounding base 1: the bracket is of the released
    # counts, which are then the true ones)
    pooled, nodes = network
    policy = DisclosurePolicy(threshold=threshold, perturbation="rounding", rounding_base=1)

    result = run_federated(
        get_analysis("quantiles"),
        {"column": "bmi", "width": 0.1, "probs": [0.05, 0.25, 0.5, 0.75, 0.95]},
        with_grids(nodes),
        policy,
    )

    values = pooled.bmi.dropna().to_numpy()
    expected = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    for (_, estimate, lower, upper), exact in zip(result["quantiles"], expected, strict=True):
        # a side in a node's open outer interval is null (unbounded), and the estimate too
        assert lower is None or lower <= exact
        assert upper is None or exact <= upper
        if lower is not None and upper is not None:
            assert lower <= estimate <= upper
    assert all(None not in row for row in result["quantiles"][1:4])  # quartiles are bounded
