"""Histogram bins through the release stage: the TRE's grid, open ends, nothing located.

The attacker's view: what a researcher receives must not name or locate a withheld bin
(a lone value in a tail, a rare value between empty bins), nor pin the data's extent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import DatasetSchema, DataSource, NodeOutput, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy, release

HISTOGRAM = get_analysis("histogram")
DEFAULT = DisclosurePolicy()
EXACT = DisclosurePolicy(threshold=10, perturbation="rounding", rounding_base=1)
SCHEMA = DatasetSchema("clinic", {"age": "float", "ward": "string"}, grids={"age": 1.0})


def source_of(tmp_path: Path, ages: list[float], name: str = "c") -> DataSource:
    engine = sa.create_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
    pd.DataFrame({"age": ages, "ward": ["w"] * len(ages)}).to_sql("t", engine, index=False)
    table = sa.Table("t", sa.MetaData(), autoload_with=engine)
    return DataSource(engine, table, SCHEMA)


def run(params: dict, source: DataSource, policy: DisclosurePolicy = DEFAULT) -> NodeOutput:
    out = HISTOGRAM.check(params, HISTOGRAM.compute(params, source), policy)
    if out.payload:  # what the agent's executor does to every released payload
        fields = {k: release.Kind(v) for k, v in HISTOGRAM.released_fields.items()}
        out = NodeOutput(out.outcome, release.seal("histogram", out.payload, fields), out.rules)
    return out


def edges_of(payload: dict) -> list[float]:
    return [e for lo, hi, _ in payload["bins"] for e in (lo, hi) if e is not None]


# -- the grid ------------------------------------------------------------------------------


def test_a_column_without_a_grid_is_refused_with_what_the_tre_must_declare() -> None:
    schema = DatasetSchema("clinic", {"age": "float"})
    problems = HISTOGRAM.schema_problems({"column": "age", "width": 5}, schema)
    assert problems and "grids" in problems[0] and "age" in problems[0]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"column": "age", "width": 2.5}, "whole multiple"),
        ({"column": "age", "width": 0.5}, "whole multiple"),
        ({"column": "age", "width": 5, "origin": 0.5}, "origin"),
        ({"column": "age", "edges": [0, 10, 20.5]}, "20.5"),
    ],
)
def test_bins_off_the_grid_are_refused(params: dict, fragment: str) -> None:
    problems = HISTOGRAM.schema_problems(params, SCHEMA)
    assert any(fragment in p for p in problems), problems


# -- attacks -------------------------------------------------------------------------------


def test_a_lone_value_in_the_tail_is_neither_named_nor_bounded(tmp_path: Path) -> None:
    # 200 people aged 20-69, and one aged 97: the top of a skewed column
    rng = np.random.default_rng(3)
    ages = [float(a) for a in rng.integers(20, 70, 200)] + [97.0]
    out = run({"column": "age", "width": 10}, source_of(tmp_path, ages))

    assert out.outcome is Outcome.RELEASED  # the tail merged into the open top bin
    bins = out.payload["bins"]
    assert bins[0][0] is None and bins[-1][1] is None  # open ends
    assert max(edges_of(out.payload)) < 70  # nothing says anyone is older than 69
    assert min(edges_of(out.payload)) > 20  # nor where the youngest is
    assert 97.0 not in edges_of(out.payload) and 98.0 not in edges_of(out.payload)
    # each open bin holds at least `threshold` people
    assert bins[0][2] >= DEFAULT.threshold and bins[-1][2] >= DEFAULT.threshold


def test_a_rare_value_between_empty_bins_is_not_located(tmp_path: Path) -> None:
    # Dense 20-39 and 60-79; 3 people aged 50; empty bins around them.
    rng = np.random.default_rng(4)
    ages = [float(a) for a in rng.integers(20, 40, 150)]
    ages += [50.0] * 3 + [float(a) for a in rng.integers(60, 80, 150)]
    out = run({"column": "age", "width": 5}, source_of(tmp_path, ages), EXACT)

    assert out.outcome is Outcome.SUPPRESSED
    bins = out.payload["bins"]
    shown = {(lo, hi): n for lo, hi, n in bins}
    # the bins 40-45, 45-50, 50-55, 55-60: empty or withheld, all shown alike
    middle = [shown[(float(a), float(a + 5))] for a in (40, 45, 50, 55)]
    assert middle == [None] * 4
    assert 0 not in [n for _, _, n in bins]  # no zero marks where the withheld one is not
    # the withheld bins together: secondary suppression leaves more than the 3 hidden
    total = len(ages)
    assert total - sum(n for _, _, n in bins if n is not None) >= EXACT.threshold


def test_empty_bins_show_as_zero_when_nothing_is_withheld(tmp_path: Path) -> None:
    ages = [25.0] * 20 + [26.0] * 15 + [40.0] * 30
    out = run({"column": "age", "width": 5}, source_of(tmp_path, ages), EXACT)
    assert out.outcome is Outcome.RELEASED
    assert [n for _, _, n in out.payload["bins"]] == [35, 0, 0, 30]


def test_fixed_edges_merge_a_sparse_top_into_the_open_bin(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ages = [float(a) for a in rng.integers(20, 80, 300)] + [97.0]
    edges = [0, 20, 40, 60, 80, 95, 100]
    out = run({"column": "age", "edges": edges}, source_of(tmp_path, ages))

    assert out.outcome is Outcome.RELEASED
    assert 95.0 not in edges_of(out.payload) and 80.0 not in edges_of(out.payload)
    assert out.payload["bins"][-1][1] is None


def test_a_cohort_too_small_to_split_is_one_open_bin_or_blocked(tmp_path: Path) -> None:
    ages = [30.0] * 8 + [60.0] * 8
    out = run({"column": "age", "width": 5}, source_of(tmp_path, ages), EXACT)
    assert out.outcome is Outcome.RELEASED
    assert out.payload["bins"] == [[None, None, 16]]
    small = run({"column": "age", "width": 5}, source_of(tmp_path, [30.0] * 5, "s"), EXACT)
    assert small.outcome is Outcome.BLOCKED and small.payload == {}


# -- noise ---------------------------------------------------------------------------------


def test_bins_carry_consistent_bounded_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    ages = [float(a) for a in rng.integers(20, 80, 600)]
    source = source_of(tmp_path, ages)
    params = {"column": "age", "width": 10}

    out = run(params, source)
    again = run(params, source)

    assert out.payload == again.payload  # the same cohort: the same answer
    values = np.asarray(ages)
    for lo, hi, n in out.payload["bins"]:
        inside = np.ones(len(values), dtype=bool)
        if lo is not None:
            inside &= values >= lo
        if hi is not None:
            inside &= values < hi
        assert abs(n - int(inside.sum())) <= DEFAULT.noise_deviation
        assert n >= DEFAULT.threshold
    assert any(r.rule == "perturbation" for r in out.rules)


# -- combination ---------------------------------------------------------------------------


def test_nodes_with_different_open_ends_combine_on_their_common_edges(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    a_ages = [float(x) for x in rng.integers(20, 80, 300)]
    b_ages = [float(x) for x in rng.integers(40, 60, 100)]
    params = {"column": "age", "width": 10}
    outputs = {
        "a": run(params, source_of(tmp_path, a_ages, "a"), EXACT),
        "b": run(params, source_of(tmp_path, b_ages, "b"), EXACT),
    }

    combined = HISTOGRAM.combine(params, outputs)

    bins = combined["bins"]
    assert bins[0][0] is None and bins[-1][1] is None
    inner = {lo for lo, _, _ in bins[1:]}
    for node in outputs.values():
        assert inner <= set(edges_of(node.payload))  # only edges every node released
    pooled = np.asarray(a_ages + b_ages)
    for lo, hi, n in bins:
        inside = np.ones(len(pooled), dtype=bool)
        if lo is not None:
            inside &= pooled >= lo
        if hi is not None:
            inside &= pooled < hi
        assert n == int(inside.sum())
    frame = HISTOGRAM.to_frame(params, combined)
    assert frame.n.tolist() == [n for _, _, n in bins]
