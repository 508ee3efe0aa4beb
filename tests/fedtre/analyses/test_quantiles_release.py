"""What quantiles releases: grid bounds only, open outer bounds, perturbed and consistent counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import make_source, run_node

from fedtre.analyses import DatasetSchema, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy, release

SCHEMA = DatasetSchema(
    name="cohort", columns={"bmi": "float", "age": "integer"}, grids={"bmi": 0.5}
)
Q = get_analysis("quantiles")


@pytest.fixture
def source(tmp_path: Path):
    rng = np.random.default_rng(9)
    bmi = np.round(rng.normal(27, 4, 500), 3)
    bmi[bmi % 0.5 == 0] += 0.001  # no value on the grid
    made = make_source(
        tmp_path / "n.db", pd.DataFrame({"bmi": bmi, "age": rng.integers(20, 90, 500)}), SCHEMA
    )
    yield made, bmi
    made.engine.dispose()


@pytest.mark.parametrize(
    "policy",
    [
        DisclosurePolicy(),
        DisclosurePolicy(
            threshold=1, perturbation="rounding", rounding_base=1, zeros_disclosive=False
        ),
    ],
)
def test_bounds_are_grid_points_the_outer_ones_open_and_never_a_value(source, policy) -> None:
    made, bmi = source
    params = Q.validate({"column": "bmi", "width": 0.5})

    output = Q.check(params, Q.compute(params, made), policy)

    release.seal(Q.name, output.payload, Q.released_fields)
    intervals = output.payload["intervals"]
    assert intervals[0][0] is None and intervals[-1][1] is None
    inner = [b for lo, hi, _ in intervals for b in (lo, hi) if b is not None]
    assert all((b / 0.5).is_integer() for b in inner)
    assert not set(inner) & set(bmi.tolist())
    assert bmi.min() not in inner and bmi.max() not in inner


def test_default_counts_are_near_the_true_ones_and_consistent(source) -> None:
    made, bmi = source
    policy = DisclosurePolicy()
    params = {"column": "bmi", "width": 0.5}

    first = run_node(Q, params, made, policy)
    again = run_node(Q, params, made, policy)

    assert first.payload == again.payload
    assert abs(first.payload["n"] - len(bmi)) <= policy.noise_deviation
    for lo, hi, count in first.payload["intervals"]:
        low = -np.inf if lo is None else lo
        high = np.inf if hi is None else hi
        true = int(((bmi >= low) & (bmi < high)).sum())
        assert true >= policy.threshold and count >= policy.threshold
        assert abs(count - true) <= policy.noise_deviation


def test_a_width_must_be_a_multiple_of_the_grid_and_the_column_must_have_one() -> None:
    assert Q.schema_problems({"column": "bmi", "width": 1.5}, SCHEMA) == []
    assert any("multiple" in p for p in Q.schema_problems({"column": "bmi", "width": 0.3}, SCHEMA))
    assert any(
        "origin" in p
        for p in Q.schema_problems({"column": "bmi", "width": 1, "origin": 0.2}, SCHEMA)
    )
    problems = Q.schema_problems({"column": "age", "width": 5}, SCHEMA)
    assert any("grids" in p and "age" in p for p in problems)


def test_too_few_values_release_nothing(tmp_path: Path) -> None:
    made = make_source(
        tmp_path / "s.db", pd.DataFrame({"bmi": [25.1, 26.2, 27.3], "age": [1, 2, 3]}), SCHEMA
    )
    output = run_node(Q, {"column": "bmi", "width": 0.5}, made, DisclosurePolicy())
    assert output.outcome is Outcome.BLOCKED and output.payload == {}
    made.engine.dispose()
