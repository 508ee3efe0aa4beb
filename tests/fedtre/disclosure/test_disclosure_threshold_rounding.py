"""Disclosure checks: small counts and small groups are withheld, released counts rounded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import DatasetSchema, DataSource, NodeOutput, Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.disclosure.rules import (
    check_group_sizes,
    count_rule,
    outcome_for,
    round_count,
)
from fedtre.errors import InvalidRequest

STRICT = DisclosurePolicy(threshold=10, rounding_base=5)
# Rounding to 5 instead of the default cell-key noise: for the tests of rounding itself.
ROUNDED = DisclosurePolicy(threshold=10, rounding_base=5, perturbation="rounding")
SCHEMA = DatasetSchema("clinic", {"ward": "string", "sex": "string", "los": "float"})
# Ward sizes by construction: a and b fall below the threshold of 10.
WARD_SIZES = {"a": 3, "b": 7, "c": 12, "d": 23, "e": 40}


def numbers_in(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, Mapping):
        return [x for v in value.values() for x in numbers_in(v)]
    return [x for v in value for x in numbers_in(v)]


def mentions(text: str, number: float) -> bool:
    return (
        re.search(rf"(?<![\d.]){re.escape(repr(number).removesuffix('.0'))}(?![\d])", text)
        is not None
    )


@pytest.fixture
def clinic(tmp_path: Path):
    rng = np.random.default_rng(5)
    wards = [w for w, k in WARD_SIZES.items() for _ in range(k)]
    df = pd.DataFrame(
        {
            "ward": wards,
            "sex": rng.choice(["F", "M"], len(wards)),
            "los": np.round(rng.gamma(2.0, 3.0, len(wards)), 2),
        }
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    df.to_sql("stays", engine, index=False)
    table = sa.Table("stays", sa.MetaData(), autoload_with=engine)
    yield df, DataSource(engine, table, SCHEMA)
    engine.dispose()


def run(name: str, params: dict[str, Any], source: DataSource, policy=STRICT) -> NodeOutput:
    analysis = get_analysis(name)
    return analysis.check(params, analysis.compute(params, source), policy)


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("n", "base", "want"),
    [
        (7, 1, 7),
        (0, 5, 0),
        (12, 5, 10),
        (13, 5, 15),
        (14, 10, 10),
        (15, 10, 20),  # an exact half rounds up
        (25, 10, 30),
        (1, 4, 0),
        (2, 4, 4),
        (10**18 + 7, 5, 10**18 + 5),  # integer arithmetic: no float error
    ],
)
def test_round_count(n: int, base: int, want: int) -> None:
    assert round_count(n, base) == want


def test_outcome_for() -> None:
    assert outcome_for(released=3, withheld=0) is Outcome.RELEASED
    assert outcome_for(released=2, withheld=1) is Outcome.SUPPRESSED
    assert outcome_for(released=0, withheld=4) is Outcome.BLOCKED


def test_count_at_threshold_is_released_and_below_is_withheld() -> None:
    rounding = replace(STRICT, perturbation="rounding")
    assert release.count(10, 0, rounding) == 10
    assert release.count(9, 0, rounding) is None
    for key in range(0, 256, 51):
        assert release.count(10, key, STRICT) == 10  # the noise never goes below it
        assert release.count(9, key, STRICT) is None


def test_threshold_zero_releases_zero_only_where_zeros_may_show() -> None:
    exact = DisclosurePolicy(threshold=0, rounding_base=1, perturbation="rounding")
    assert release.count(0, 0, exact, zero_ok=True) == 0
    assert release.count(0, 0, exact) is None


def test_the_count_rule_says_how_counts_are_protected() -> None:
    assert count_rule(replace(STRICT, perturbation="rounding")).rule == "rounding"
    assert "nearest multiple of 5" in count_rule(replace(STRICT, perturbation="rounding")).detail
    assert count_rule(STRICT).rule == "perturbation" and count_rule(STRICT).passed


def test_no_groups_is_blocked_unless_threshold_is_zero() -> None:
    assert check_group_sizes([], STRICT, column="x", grouped=True).outcome is Outcome.BLOCKED


# ----------------------------------------------------------------------------- analyses


def test_small_count_is_blocked_and_absent_from_the_payload(clinic) -> None:
    _, source = clinic
    output = run("count", {"filter": {"col": "ward", "op": "==", "value": "b"}}, source)
    assert output.outcome is Outcome.BLOCKED
    assert output.payload == {"n": None}
    assert not any(mentions(r.detail, 7) for r in output.rules)


def test_released_count_is_rounded_under_the_rounding_policy(clinic) -> None:
    _, source = clinic
    params = {"filter": {"col": "ward", "op": "in", "value": ["a", "c"]}}
    output = run("count", params, source, ROUNDED)
    assert output.outcome is Outcome.RELEASED
    assert output.payload == {"n": 15}  # 3 + 12 = 15 records


def test_released_count_carries_consistent_bounded_noise_by_default(clinic) -> None:
    _, source = clinic
    default = DisclosurePolicy()
    for wards, true_n in ((["a", "c"], 15), (["d", "e"], 63), (["c", "d", "e"], 75)):
        params = {"filter": {"col": "ward", "op": "in", "value": wards}}
        output = run("count", params, source, default)
        n = output.payload["n"]
        assert output.outcome is Outcome.RELEASED
        assert abs(n - true_n) <= default.noise_deviation and n >= default.threshold
        # the same cohort, asked again (and written another way): the same answer
        assert run("count", params, source, default).payload == {"n": n}
        reordered = {"filter": {"col": "ward", "op": "in", "value": wards[::-1]}}
        assert run("count", reordered, source, default).payload == {"n": n}
    assert any(r.rule == "perturbation" for r in output.rules)


def test_crosstab_withholds_small_cells_and_rounds_the_rest(clinic) -> None:
    _, source = clinic
    output = run("crosstab", {"rows": "ward"}, source, ROUNDED)

    assert output.outcome is Outcome.SUPPRESSED
    cells = {r: n for r, _, n in output.payload["cells"]}
    # The withheld wards' labels are dropped, and nothing says how many were.
    assert cells == {"c": 10, "d": 25, "e": 40}
    assert "hidden" not in output.payload
    assert not {3.0, 7.0} & set(numbers_in(output.payload))
    assert all(n % 5 == 0 for n in numbers_in(output.payload))
    failed = [r for r in output.rules if not r.passed]
    assert [r.rule for r in failed] == ["threshold"]
    assert "2 of 5 cells have fewer than 10 records" in failed[0].detail
    assert not any(mentions(r.detail, 3) or mentions(r.detail, 7) for r in output.rules)


def test_crosstab_with_every_cell_small_is_blocked_and_empty(clinic) -> None:
    _, source = clinic
    params = {"rows": "ward", "filter": {"col": "ward", "op": "in", "value": ["a", "b"]}}
    output = run("crosstab", params, source)
    assert output.outcome is Outcome.BLOCKED
    assert output.payload["cells"] == []


def test_crosstab_under_noise_is_close_consistent_and_names_no_withheld_ward(clinic) -> None:
    _, source = clinic
    default = DisclosurePolicy()
    params = {"rows": "ward", "margins": True}
    output = run("crosstab", params, source, default)

    cells = {r: n for r, _, n in output.payload["cells"]}
    assert set(cells) == {"c", "d", "e"}
    for ward, n in cells.items():
        assert n is None or abs(n - WARD_SIZES[ward]) <= default.noise_deviation
    assert "'a'" not in repr(output.payload) and "'b'" not in repr(output.payload)
    assert "hidden" not in output.payload
    assert run("crosstab", params, source, default).payload == output.payload


def test_two_way_crosstab_withholds_cell_by_cell(clinic) -> None:
    df, source = clinic
    output = run("crosstab", {"rows": "ward", "columns": "sex"}, source, ROUNDED)
    raw = df.groupby(["ward", "sex"]).size()
    secondary = 0
    for r, c, n in output.payload["cells"]:
        exact = int(raw.get((r, c), 0))
        if exact < 10:
            assert n is None  # below the threshold, or a zero cell
        elif n is None:
            secondary += 1  # withheld so the small cells cannot be recovered from totals
        else:
            assert n == 5 * int(exact / 5 + 0.5)
    assert output.outcome is Outcome.SUPPRESSED
    rule = next(r for r in output.rules if r.rule == "secondary_suppression")
    # some secondary cells may sit in dropped levels, out of sight
    assert secondary == 0 or not rule.passed


def test_summary_withholds_small_groups_whole_and_rounds_n(clinic) -> None:
    df, source = clinic
    # Rounding as the TRE's choice, and no magnitude noise: the rules under test alone
    rounding = DisclosurePolicy(
        threshold=10, rounding_base=5, perturbation="rounding", magnitude_noise=0
    )
    output = run("summary", {"column": "los", "by": "ward"}, source, rounding)

    assert output.outcome is Outcome.SUPPRESSED
    groups = {g: rest for g, *rest in output.payload["groups"]}
    assert "a" not in groups and "b" not in groups
    assert "hidden" not in output.payload  # nor how many groups were withheld
    withheld = df[df.ward.isin(["a", "b"])].groupby("ward").los.agg(["mean", "std"])
    assert not set(withheld.to_numpy().ravel()) & set(numbers_in(output.payload))
    c = df[df.ward == "c"].los
    assert groups["c"][0] == 10  # 12 rounded like any count, so no count's rounding is undone
    assert groups["c"][1] == pytest.approx(c.mean(), rel=1e-12)
    assert groups["c"][2] == pytest.approx(c.std(ddof=1), rel=1e-12)
    threshold = next(r for r in output.rules if r.rule == "threshold")
    assert not threshold.passed and "2 of 5 groups" in threshold.detail

    # Under the default policy n carries cell-key noise and mean and sd magnitude noise
    default = run("summary", {"column": "los", "by": "ward"}, source)
    noisy = {g: rest for g, *rest in default.payload["groups"]}
    assert set(noisy) == set(groups)
    for ward, (n, mean, _) in noisy.items():
        values = df[df.ward == ward].los
        assert abs(n - len(values)) <= STRICT.noise_deviation
        bound = STRICT.magnitude_noise * values.abs().max() / len(values)
        assert abs(mean - values.mean()) <= bound


def test_ungrouped_summary_below_threshold_is_blocked(clinic) -> None:
    _, source = clinic
    params = {"column": "los", "filter": {"col": "ward", "op": "==", "value": "b"}}
    output = run("summary", params, source)
    assert output.outcome is Outcome.BLOCKED
    assert output.payload["groups"] == []
    assert numbers_in(output.payload) == []
    assert not any(mentions(r.detail, 7) for r in output.rules)


def test_summary_with_every_group_small_is_blocked(clinic) -> None:
    _, source = clinic
    params = {"column": "los", "by": "sex", "filter": {"col": "ward", "op": "==", "value": "b"}}
    output = run("summary", params, source)
    assert output.outcome is Outcome.BLOCKED
    assert output.payload["groups"] == []


# ----------------------------------------------------------------------------- policy


def test_policy_from_mapping_refuses_unknown_settings() -> None:
    assert DisclosurePolicy.from_mapping({"threshold": 5}) == DisclosurePolicy(5, 5)
    with pytest.raises(InvalidRequest, match="unknown disclosure policy setting"):
        DisclosurePolicy.from_mapping({"threshold": 5, "dominance": 0.9})


@pytest.mark.parametrize("bad", [{"threshold": -1}, {"threshold": True}, {"rounding_base": 0}])
def test_policy_refuses_impossible_values(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        DisclosurePolicy(**bad)
