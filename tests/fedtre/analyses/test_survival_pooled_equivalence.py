"""Federated Kaplan-Meier curves and the log-rank test equal the pooled analysis.

References on the pooled records: a Kaplan-Meier estimate written out here from the raw
times (numbers at risk, Greenwood standard errors, log(-log) 95% intervals), statsmodels'
SurvfuncRight (survival and standard errors at event times, median), and statsmodels'
survdiff (log-rank chi-squared and p value).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from analysis_testkit import run_federated, run_node
from model_testkit import make_model_nodes, model_cohort, split_with_single_level
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from fedtre.analyses import Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy

POOLED_N = 900
SPLITS = {
    "2 nodes": ([160, 740], ("smoking", "never")),
    "3 nodes": ([90, 510, 300], ("arm", "a")),
    "5 nodes": ([60, 300, 70, 350, 120], ("smoking", "current")),
}


@pytest.fixture(params=list(SPLITS), scope="module")
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    sizes, (column, level) = SPLITS[request.param]
    pooled = model_cohort(POOLED_N, seed=42)
    parts = split_with_single_level(pooled, sizes, column, level)
    nodes = make_model_nodes(tmp_path_factory.mktemp("km"), parts)
    yield pd.concat(parts, ignore_index=True), nodes
    for source in nodes.values():
        source.engine.dispose()


def reference_km(time: np.ndarray, died: np.ndarray) -> list[tuple[float, ...]]:
    """Kaplan-Meier from raw records: one row per distinct time (events or censorings).

    (time, at risk, events, censored, survival, Greenwood se, log(-log) lower, upper).
    """
    z = stats.norm.ppf(0.975)
    rows = []
    s, var_sum = 1.0, 0.0
    for t in np.unique(time):
        n = int(np.sum(time >= t))
        d = int(np.sum((time == t) & (died == 1)))
        c = int(np.sum((time == t) & (died == 0)))
        if d:
            s *= 1 - d / n
            var_sum += d / (n * (n - d)) if n > d else math.inf
        se = s * math.sqrt(var_sum) if s > 0 else math.nan
        if 0 < s < 1:
            half = z * math.sqrt(var_sum) / math.log(s)
            lower, upper = s ** math.exp(-half), s ** math.exp(half)
        elif s == 1:
            lower = upper = 1.0
        else:
            lower = upper = math.nan
        rows.append((float(t), n, d, c, s, se, lower, upper))
    return rows


def as_array(rows: Any) -> np.ndarray:
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)


def check_curve(curve: dict[str, Any], time: np.ndarray, died: np.ndarray) -> None:
    got = as_array(curve["table"])
    expected = np.array(reference_km(time, died), dtype=float)
    assert got.shape == expected.shape
    # times, numbers at risk, events, censorings: exact
    assert np.array_equal(got[:, :4], expected[:, :4])
    assert np.allclose(got[:, 4:], expected[:, 4:], rtol=1e-10, atol=1e-14, equal_nan=True)
    assert curve["n"] == len(time)
    assert curve["events"] == int(died.sum())
    # statsmodels at the event times: survival and Greenwood standard errors
    sf = SurvfuncRight(time, died)
    at_events = got[got[:, 2] > 0]
    assert np.array_equal(at_events[:, 0], sf.surv_times)
    assert np.array_equal(at_events[:, 1], sf.n_risk)
    assert np.allclose(at_events[:, 4], sf.surv_prob, rtol=1e-12, atol=1e-15)
    finite = np.isfinite(sf.surv_prob_se) & (sf.surv_prob > 0)
    assert np.allclose(at_events[finite, 5], sf.surv_prob_se[finite], rtol=1e-10)
    median = sf.quantile(0.5)
    if np.isnan(median):
        assert curve["median"] is None
    else:
        assert curve["median"] == median


def test_kaplan_meier_without_groups_equals_pooled(network) -> None:
    pooled, nodes = network

    result = run_federated(get_analysis("kaplan_meier"), {"time": "time", "event": "died"}, nodes)

    [[label, curve]] = result["groups"]
    assert label is None
    check_curve(curve, pooled.time.to_numpy(), pooled.died.to_numpy())
    assert result["logrank"] is None
    assert result["withheld"] == []


@pytest.mark.parametrize("by", ["smoking", "arm", "sex", "site"])
def test_kaplan_meier_by_group_and_log_rank_equal_pooled(network, by: str) -> None:
    # Given one node holding a single level of some grouping column
    pooled, nodes = network

    # When curves by group are combined
    result = run_federated(
        get_analysis("kaplan_meier"), {"time": "time", "event": "died", "by": by}, nodes
    )

    # Then each group's curve is the pooled group's, and the log-rank test is statsmodels'
    labels = sorted(pooled[by].astype(str).unique())
    assert sorted(label for label, _ in result["groups"]) == labels
    for label, curve in result["groups"]:
        group = pooled[pooled[by].astype(str) == label]
        check_curve(curve, group.time.to_numpy(), group.died.to_numpy())
    chi2, p = survdiff(pooled.time.to_numpy(), pooled.died.to_numpy(), pooled[by].astype(str))
    logrank = result["logrank"]
    assert logrank["df"] == len(labels) - 1
    assert logrank["chi2"] == pytest.approx(chi2, rel=1e-10)
    assert logrank["p_value"] == pytest.approx(p, rel=1e-8)


def test_kaplan_meier_with_filter_equals_pooled_subset(network) -> None:
    pooled, nodes = network
    f = {"col": "age", "op": ">=", "value": 50}

    result = run_federated(
        get_analysis("kaplan_meier"),
        {"time": "time", "event": "died", "by": "sex", "filter": f},
        nodes,
    )

    subset = pooled[pooled.age >= 50]
    for label, curve in result["groups"]:
        group = subset[subset.sex == label]
        check_curve(curve, group.time.to_numpy(), group.died.to_numpy())
    chi2, _ = survdiff(subset.time.to_numpy(), subset.died.to_numpy(), subset.sex.to_numpy())
    assert result["logrank"]["chi2"] == pytest.approx(chi2, rel=1e-10)


def test_kaplan_meier_frame_has_the_survival_table(network) -> None:
    pooled, nodes = network
    params = {"time": "time", "event": "died", "by": "arm"}
    result = run_federated(get_analysis("kaplan_meier"), params, nodes)

    frame = get_analysis("kaplan_meier").to_frame(params, result)

    assert list(frame.index.names) == ["arm", "time"]
    assert list(frame.columns) == [
        "at_risk",
        "events",
        "censored",
        "survival",
        "std_err",
        "ci_lower",
        "ci_upper",
    ]
    group = pooled[pooled.arm == "b"]
    expected = np.array(reference_km(group.time.to_numpy(), group.died.to_numpy()))
    assert np.array_equal(frame.loc["b"].index.to_numpy(), expected[:, 0])
    assert np.allclose(frame.loc["b", "survival"].to_numpy(), expected[:, 4], rtol=1e-10)
    assert frame.attrs["logrank"]["chi2"] == result["logrank"]["chi2"]


def test_with_merged_intervals_the_curve_is_the_pooled_grouped_data(network) -> None:
    # Given the default policy: each node merges its event times into intervals of at
    # least 10 events (and 0 or at least 10 censorings)
    pooled, nodes = network
    policy = DisclosurePolicy()
    params = {"time": "time", "event": "died", "by": "smoking"}
    analysis = get_analysis("kaplan_meier")
    outputs = {node: run_node(analysis, params, source, policy) for node, source in nodes.items()}

    # When the coordinator combines the released intervals
    result = analysis.combine(analysis.validate(params), outputs)

    # Then each curve is the pooled Kaplan-Meier of the records with their times moved to
    # the end of the interval their node released them in (nothing finer is known)
    assert {o.outcome for o in outputs.values()} <= {Outcome.RELEASED, Outcome.SUPPRESSED}
    for output in outputs.values():
        # merging coarsens and withholds no record: only a withheld group suppresses
        has_withheld = any(curve is None for _, curve in output.payload["groups"])
        assert output.outcome is (Outcome.SUPPRESSED if has_withheld else Outcome.RELEASED)
    moved, withheld = [], set()
    for node, source in nodes.items():
        with source.engine.connect() as conn:
            records = pd.read_sql(sa.select(source.table), conn)
        intervals = dict(outputs[node].payload["groups"])
        for label, group in records.groupby("smoking"):
            if intervals[label] is None:  # too few records or events at this node
                withheld.add(label)
                continue
            bounds = np.array([[start, end] for start, end, *_ in intervals[label]])
            assert bounds[0, 0] <= group.time.min() and group.time.max() <= bounds[-1, 1]
            which = np.searchsorted(bounds[:, 1], group.time.to_numpy(), side="left")
            moved.append(group.assign(time=bounds[which, 1]))
    grouped = pd.concat(moved)
    for label, curve in result["groups"]:
        if label in withheld:
            assert curve is None
            continue
        part = grouped[grouped.smoking == label]
        check_reference_only(curve, part.time.to_numpy(), part.died.to_numpy())
    if withheld:
        assert result["logrank"] is None
        return
    chi2, p = survdiff(grouped.time.to_numpy(), grouped.died.to_numpy(), grouped.smoking)
    assert result["logrank"]["chi2"] == pytest.approx(chi2, rel=1e-10)


def check_reference_only(curve: dict[str, Any], time: np.ndarray, died: np.ndarray) -> None:
    got = as_array(curve["table"])
    expected = np.array(reference_km(time, died), dtype=float)
    assert np.array_equal(got[:, :4], expected[:, :4])
    assert np.allclose(got[:, 4:], expected[:, 4:], rtol=1e-10, atol=1e-14, equal_nan=True)


def test_plot_numbers_at_risk_are_the_pooled_ones(network) -> None:
    from fedtre.plot import at_risk

    pooled, nodes = network
    result = run_federated(
        get_analysis("kaplan_meier"), {"time": "time", "event": "died", "by": "sex"}, nodes
    )
    ticks = [0.0, 0.5, 3.0, 7.25, 12.0, 20.0, 29.0, 100.0]

    for label, curve in result["groups"]:
        times = pooled[pooled.sex == label].time.to_numpy()
        assert at_risk(curve["table"], ticks) == [int(np.sum(times >= t)) for t in ticks]


def test_a_node_whose_times_are_merged_releases_with_the_rule_saying_so() -> None:
    # Given one group of 60 records with every event time distinct (each alone < 10)
    times = np.arange(1.0, 61.0)
    raw = {"groups": [[None, [[float(t), 1, 0] for t in times]]]}
    analysis = get_analysis("kaplan_meier")
    params = analysis.validate({"time": "time", "event": "died"})

    # When the default policy checks it
    output = analysis.check(params, raw, DisclosurePolicy())

    # Then the times are merged into intervals of >= 10 events and the output is released
    ((label, intervals),) = output.payload["groups"]
    assert len(intervals) < len(times) and all(i[3] >= 10 for i in intervals)
    assert output.outcome is Outcome.RELEASED
    (rule,) = output.rules
    assert rule.passed and "merged into intervals" in rule.detail
