"""Attack class 6: data-derived bounds.

The target has the unique extreme values: sbp 231.73 (everyone else is below 180) and
the longest follow-up, time 30.43, censored (everyone else is at most 20). Bounds
derived from records (a minimum, a maximum, an order statistic, the last event time,
the edge of a bin holding only the target) would say so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fedtre.analyses import Outcome

from .conftest import Factory, numbers, unique_targets

SBP, TIME = 231.73, 30.43
# What the attacker must not learn: that someone lies above the others' range.
SBP_OTHERS_MAX, TIME_OTHERS_MAX = 180.0, 20.0


@pytest.fixture(scope="module")
def extreme(frame: pd.DataFrame) -> pd.DataFrame:
    world = frame.copy()
    target = unique_targets(world)[0]
    world.loc[target, ["sbp", "time", "event"]] = [SBP, TIME, 0]
    return world


def released(output: Any) -> bool:
    return output.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED)


def assert_no_record_value(values: list[float], column: pd.Series) -> None:
    records = set(column.round(9))
    leaked = [v for v in values if round(v, 9) in records]
    assert not leaked, f"released numbers equal to a record's value: {leaked}"


@pytest.mark.parametrize("width", [1, 5])
def test_histogram_does_not_locate_the_extreme(
    factory: Factory, extreme: pd.DataFrame, width: int
) -> None:
    """histogram(sbp) with width 1 and 5 (grid 1), node output and combined.

    Nothing learned: no released edge or count describes the range above the others'
    maximum (no number above 181), no released number equals a record's sbp, and the
    top bin is open (its upper edge null).
    """
    agent = factory.agent(factory.source(extreme))
    out = agent.ask("histogram", column="sbp", width=width)
    assert released(out)
    edges = [b[0] for b in out.payload["bins"]] + [b[1] for b in out.payload["bins"]]
    assert out.payload["bins"][-1][1] is None and out.payload["bins"][0][0] is None
    values = [e for e in edges if e is not None]
    assert max(values) <= SBP_OTHERS_MAX + 1
    assert_no_record_value(numbers(out.payload), extreme["sbp"])
    combined = agent.combined("histogram", "p2", column="sbp", width=width)
    assert max(numbers([b[:2] for b in combined["bins"]]), default=0) <= SBP_OTHERS_MAX + 1


def test_histogram_with_fixed_edges_does_not_say_the_extreme_bin_is_occupied(
    factory: Factory, extreme: pd.DataFrame
) -> None:
    """histogram(sbp) with edges [100, 140, 180, 230, 235]: the researcher's own bins, one
    of which ([230, 235]) holds only the target and one ([180, 230)) nobody.

    Nothing learned: no bin at or above 180 has a released count (a 0 beside a withheld
    bin, or a withheld bin beside a 0, would say where the target is).
    """
    agent = factory.agent(factory.source(extreme))
    out = agent.ask("histogram", column="sbp", edges=[100, 140, 180, 230, 235])
    assert released(out)
    for lower, _upper, n in out.payload["bins"]:
        if lower is not None and lower >= SBP_OTHERS_MAX:
            assert n is None, out.payload["bins"]


def test_quantiles_do_not_release_extremes(factory: Factory, extreme: pd.DataFrame) -> None:
    """quantiles(sbp) at the finest width (the grid, 1) with probs 0.001, 0.5, 0.999,
    node output and combined.

    Nothing learned: every released bound and estimate is at most 181 (nothing locates
    the target above the others), none equals a record's sbp, the outer bounds are open.
    """
    agent = factory.agent(factory.source(extreme))
    params = {"column": "sbp", "width": 1, "probs": [0.001, 0.5, 0.999]}
    out = agent.ask("quantiles", **params)
    if released(out):
        intervals = out.payload["intervals"]
        assert intervals[0][0] is None and intervals[-1][1] is None
        bounds = numbers([i[:2] for i in intervals])
        assert max(bounds) <= SBP_OTHERS_MAX + 1
        assert_no_record_value(numbers(out.payload), extreme["sbp"])
    combined = agent.combined("quantiles", "p2", **params)
    assert max(numbers(combined.get("quantiles")), default=0) <= SBP_OTHERS_MAX + 1
    assert_no_record_value(numbers(combined.get("quantiles")), extreme["sbp"])


def test_kaplan_meier_does_not_release_the_longest_follow_up(
    factory: Factory, extreme: pd.DataFrame
) -> None:
    """kaplan_meier(time, event), overall and by sex, node output and combined.

    Nothing learned: no released time is above 21 (the target's follow-up, 30.43, is
    not located), none equals a record's time, the last interval is open.
    """
    agent = factory.agent(factory.source(extreme))
    for by in (None, "sex"):
        params = {"time": "time", "event": "event"} | ({"by": by} if by else {})
        out = agent.ask("kaplan_meier", **params)
        assert released(out)
        for _label, rows in out.payload["groups"]:
            assert rows[-1][1] is None
            times = numbers([r[:2] for r in rows])
            assert max(times) <= TIME_OTHERS_MAX + 1
            assert_no_record_value(times, extreme["time"])
        combined = agent.combined("kaplan_meier", "p2", **params)
        for _label, group in combined["groups"]:
            if group is None:
                continue
            times = numbers([r[0] for r in group["table"]])
            assert max(times, default=0) <= TIME_OTHERS_MAX + 1
            assert_no_record_value(times, extreme["time"])
