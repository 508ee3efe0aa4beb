"""summary and correlation on the release stage: perturbed n, noisy means, declared fields.

The attack the issue measured: a summary released its exact mean beside a rounded n, so
on integer data n was recovered as the only integer near the rounded count that makes
mean x n whole. Here the same recovery is tried on what is released now.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import make_source

from fedtre.analyses import DatasetSchema, DataSource, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.disclosure.release import Kind, UndeclaredValue

SCHEMA = DatasetSchema(
    "people", {"age": "integer", "sex": "string", "weight": "integer", "height": "float"}
)
SUMMARY = get_analysis("summary")
CORRELATION = get_analysis("correlation")
DEFAULT = DisclosurePolicy()
# No magnitude noise, counts perturbed as now: the mean is exact as it used to be, which
# shows the attack is real (the control).
EXACT_MEANS = replace(DEFAULT, magnitude_noise=0)


def people(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 95, n),
            "sex": rng.choice(["F", "M"], n),
            "weight": rng.integers(45, 120, n),
            "height": rng.normal(170, 10, n),
        }
    )


@pytest.fixture
def cohort(tmp_path: Path):
    frame = people(157, seed=41)
    source = make_source(tmp_path / "people.db", frame, SCHEMA)
    yield frame, source
    source.engine.dispose()


def run(analysis: Any, params: dict[str, Any], source: DataSource, policy: DisclosurePolicy):
    p = analysis.validate(params)
    return analysis.check(p, analysis.compute(p, source), policy)


def sealed(analysis: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """What the agent's executor does to a released payload."""
    fields = {path: Kind(kind) for path, kind in analysis.released_fields.items()}
    return release.seal(analysis.name, payload, fields)


def whole_n_candidates(mean: float, released_n: int, deviation: int) -> list[int]:
    """The attack: every n near the released count for which mean x n is a whole number."""
    return [
        n
        for n in range(max(1, released_n - deviation), released_n + deviation + 1)
        if abs(mean * n - round(mean * n)) < 1e-6
    ]


# -- summary --------------------------------------------------------------------------------


@pytest.mark.parametrize("by", [None, "sex"])
def test_the_exact_mean_attack_no_longer_recovers_n(cohort, by: str | None) -> None:
    # Given integer data, and groups whose true n the attacker wants
    frame, source = cohort
    truth = frame.groupby("sex" if by else np.zeros(len(frame))).weight
    true_n = {(k if by else None): len(v) for k, v in truth}
    totals = {(k if by else None): int(v.sum()) for k, v in truth}

    # When the mean is exact (magnitude noise off), the attack works: the control
    exact = sealed(
        SUMMARY, run(SUMMARY, {"column": "weight", "by": by}, source, EXACT_MEANS).payload
    )
    for label, n, mean, _ in exact["groups"]:
        assert abs(n - true_n[label]) <= DEFAULT.noise_deviation  # n itself is perturbed
        assert mean == pytest.approx(totals[label] / true_n[label], rel=1e-12)
        assert whole_n_candidates(mean, n, DEFAULT.noise_deviation) == [true_n[label]]

    # Then under the default policy (noisy totals) the same recovery finds no unique n
    noisy = sealed(SUMMARY, run(SUMMARY, {"column": "weight", "by": by}, source, DEFAULT).payload)
    for label, n, mean, _ in noisy["groups"]:
        candidates = whole_n_candidates(mean, n, DEFAULT.noise_deviation)
        assert candidates != [true_n[label]]
        # mean x n is not even the true total: the total itself stays unknown
        assert mean * true_n[label] != pytest.approx(totals[label], abs=1e-6)


def test_the_same_cohort_twice_gives_identical_released_values(cohort) -> None:
    # Given one cohort written two ways (the same records)
    _, source = cohort
    older = {"col": "age", "op": ">=", "value": 40}
    not_younger = {"not": {"col": "age", "op": "<", "value": 40}}

    # When both are summarised, and the first twice
    first = run(SUMMARY, {"column": "weight", "by": "sex", "filter": older}, source, DEFAULT)
    again = run(SUMMARY, {"column": "weight", "by": "sex", "filter": older}, source, DEFAULT)
    other = run(SUMMARY, {"column": "weight", "by": "sex", "filter": not_younger}, source, DEFAULT)

    # Then every released value is the same: repeats cannot be averaged
    assert sealed(SUMMARY, first.payload) == sealed(SUMMARY, again.payload)
    assert sealed(SUMMARY, first.payload) == sealed(SUMMARY, other.payload)
    c1 = run(CORRELATION, {"columns": ["age", "weight"], "filter": older}, source, DEFAULT)
    c2 = run(CORRELATION, {"columns": ["age", "weight"], "filter": not_younger}, source, DEFAULT)
    assert sealed(CORRELATION, c1.payload) == sealed(CORRELATION, c2.payload)


@pytest.mark.parametrize("threshold", [40, 55, 70])
def test_released_n_is_within_the_noise_deviation_and_noise_is_bounded(
    cohort, threshold: int
) -> None:
    frame, source = cohort
    f = {"col": "age", "op": "<", "value": threshold}
    output = run(SUMMARY, {"column": "weight", "by": "sex", "filter": f}, source, DEFAULT)

    selected = frame[frame.age < threshold]
    for label, n, mean, sd in sealed(SUMMARY, output.payload)["groups"]:
        x = selected[selected.sex == label].weight.to_numpy(dtype=float)
        assert abs(n - len(x)) <= DEFAULT.noise_deviation and n >= DEFAULT.threshold
        # the total's noise is at most magnitude_noise x the largest |value|
        assert abs(mean - x.mean()) <= DEFAULT.magnitude_noise * np.abs(x).max() / len(x)
        # the squared deviations' noise is at most magnitude_noise x the largest deviation^2
        ss = float(((x - x.mean()) ** 2).sum())
        worst = DEFAULT.magnitude_noise * float(np.abs(x - x.mean()).max()) ** 2
        assert ss - worst <= sd * sd * (len(x) - 1) <= ss + worst + 1e-9

    c = run(CORRELATION, {"columns": ["age", "weight"], "filter": f}, source, DEFAULT)
    assert abs(c.payload["n"] - len(selected)) <= DEFAULT.noise_deviation


def test_a_withheld_group_leaves_no_label_and_no_count_of_withheld_groups(tmp_path) -> None:
    frame = people(80, seed=3)
    frame.loc[:4, "sex"] = "X"  # five people: below the threshold
    source = make_source(tmp_path / "x.db", frame, SCHEMA)
    output = run(SUMMARY, {"column": "weight", "by": "sex"}, source, DEFAULT)
    source.engine.dispose()

    payload = sealed(SUMMARY, output.payload)
    assert output.outcome is Outcome.SUPPRESSED
    assert set(payload) == {"column", "by", "groups"}  # no "hidden" count
    assert "X" not in repr(payload)
    # one withheld group takes the smallest other with it (secondary suppression)
    assert len(payload["groups"]) == 1
    assert not next(r for r in output.rules if r.rule == "secondary_suppression").passed


def test_summary_payload_is_sealed_by_its_declared_fields(cohort) -> None:
    _, source = cohort
    output = run(SUMMARY, {"column": "weight", "by": "sex"}, source, DEFAULT)
    sealed(SUMMARY, output.payload)  # passes

    # A raw (unreleased) mean or count is refused by the release stage
    tampered = {
        **output.payload,
        "groups": [[*g[:2], float(g[2]), g[3]] for g in output.payload["groups"]],
    }
    with pytest.raises(UndeclaredValue):
        sealed(SUMMARY, tampered)
    with pytest.raises(UndeclaredValue):
        sealed(SUMMARY, {**output.payload, "hidden": {"groups": 1}})


def test_pooling_under_noise_is_close_to_the_pooled_data(tmp_path) -> None:
    # Given three nodes under the default policy
    frames = [people(n, seed) for n, seed in [(120, 1), (300, 2), (90, 3)]]
    nodes = {
        f"tre-{i}": make_source(tmp_path / f"n{i}.db", f, SCHEMA) for i, f in enumerate(frames)
    }
    outputs = {}
    for node, source in nodes.items():
        out = run(SUMMARY, {"column": "height"}, source, DEFAULT)
        outputs[node] = replace(out, payload=sealed(SUMMARY, out.payload))
        source.engine.dispose()

    [[_, n, mean, sd]] = SUMMARY.combine({"column": "height"}, outputs)["groups"]

    # Then the pooled figures are approximate: n within the summed noise, mean and sd close
    x = pd.concat(frames).height.to_numpy()
    assert abs(n - len(x)) <= DEFAULT.noise_deviation * len(nodes)
    assert mean == pytest.approx(x.mean(), rel=0.02)
    assert sd == pytest.approx(x.std(ddof=1), rel=0.05)


# -- correlation ----------------------------------------------------------------------------


def test_correlation_releases_a_perturbed_n_and_model_statistics(cohort) -> None:
    frame, source = cohort
    output = run(CORRELATION, {"columns": ["age", "weight", "height"]}, source, DEFAULT)

    payload = sealed(CORRELATION, output.payload)
    assert output.outcome is Outcome.RELEASED
    assert abs(payload["n"] - len(frame)) <= DEFAULT.noise_deviation
    # model statistics, exact for the coordinator's pooling (never shown node by node)
    assert payload["n_model"] == len(frame)
    assert payload["means"] == pytest.approx(frame[["age", "weight", "height"]].mean().tolist())
    # a researcher sees only the columns and the perturbed n of a node
    assert release.researcher_view("correlation", payload) == {
        "columns": ["age", "weight", "height"],
        "n": payload["n"],
    }
    # the payload's count is a released count; a raw one is refused
    with pytest.raises(UndeclaredValue):
        sealed(CORRELATION, {**output.payload, "n": len(frame)})
    with pytest.raises(UndeclaredValue):
        sealed(CORRELATION, {**output.payload, "means": [1.0, 2.0, 3.0]})


def test_correlation_with_a_dominated_column_is_blocked_whole(tmp_path) -> None:
    frame = people(60, seed=9)
    frame.loc[0, "weight"] = 10**7  # one person is nearly the whole total
    source = make_source(tmp_path / "d.db", frame, SCHEMA)
    output = run(CORRELATION, {"columns": ["age", "weight"]}, source, DEFAULT)
    source.engine.dispose()

    assert output.outcome is Outcome.BLOCKED
    assert output.payload == {}
    failed = {r.rule for r in output.rules if not r.passed}
    assert failed == {"nk_dominance", "p_percent"}
    nk = next(r for r in output.rules if r.rule == "nk_dominance")
    assert "'weight'" in nk.detail and "'age'" not in nk.detail
    assert str(10**7) not in repr(output.rules)


def test_correlation_below_the_threshold_is_blocked(tmp_path) -> None:
    source = make_source(tmp_path / "s.db", people(9, seed=2), SCHEMA)
    output = run(CORRELATION, {"columns": ["age", "weight"]}, source, DEFAULT)
    source.engine.dispose()
    assert output.outcome is Outcome.BLOCKED and output.payload == {}
    assert not next(r for r in output.rules if r.rule == "threshold").passed
