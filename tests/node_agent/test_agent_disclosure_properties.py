"""Properties over random datasets and random queries, through a real agent executor.

Whatever is asked, within one project: no released count or cell is below the threshold,
every released cohort and its complement hold at least the threshold, and no two
released cohorts differ by 1 to threshold - 1 records (checked on the data, in pandas).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtre.analyses import Outcome, get_analysis
from fedtre.disclosure import DisclosurePolicy
from node_agent.executor import Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.sql import open_sql_source
from node_agent.state import AgentState

COLUMNS = {"age": "integer", "sex": "string", "smoker": "string"}
T = 10

conditions = st.one_of(
    st.tuples(st.just("age"), st.sampled_from([">=", "<", "=="]), st.integers(18, 90)),
    st.tuples(st.just("sex"), st.sampled_from(["==", "!="]), st.sampled_from(["F", "M"])),
    st.tuples(
        st.just("smoker"), st.sampled_from(["==", "!="]), st.sampled_from(["yes", "no", "ex"])
    ),
)
filters = st.lists(conditions, min_size=1, max_size=3)
queries = st.lists(
    st.tuples(st.sampled_from(["count", "crosstab"]), st.one_of(st.none(), filters)),
    min_size=2,
    max_size=8,
)


def as_filter(parts: list[tuple[str, str, Any]] | None) -> dict[str, Any] | None:
    if parts is None:
        return None
    items = [{"col": c, "op": op, "value": v} for c, op, v in parts]
    return items[0] if len(items) == 1 else {"and": items}


def mask(frame: pd.DataFrame, parts: list[tuple[str, str, Any]] | None) -> np.ndarray:
    selected = np.ones(len(frame), dtype=bool)
    for column, op, value in parts or []:
        values = frame[column]
        selected &= {
            ">=": values >= value,
            "<": values < value,
            "==": values == value,
            "!=": values != value,
        }[op].to_numpy()
    return selected


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 120), asked=queries)
def test_released_outputs_within_a_project_are_never_small_or_close(
    seed: int, n: int, asked: list[tuple[str, Any]]
) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "smoker": rng.choice(["yes", "no", "ex"], n, p=[0.2, 0.6, 0.2]),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "d.sqlite"
        engine = sa.create_engine(f"sqlite:///{db}")
        frame.to_sql("cohort", engine, index=False)
        engine.dispose()
        source = open_sql_source("cohort", f"sqlite:///{db}", "cohort", COLUMNS)
        policy = LocalPolicy(
            node_id="tre-a",
            analyses={a: get_analysis(a) for a in ("count", "crosstab")},
            disclosure=DisclosurePolicy(threshold=T, rounding_base=1),
            datasets={"cohort": source.schema},
        )
        released: list[np.ndarray] = []
        with AgentState(Path(tmp) / "state.sqlite") as state:
            executor = Executor(policy, {"cohort": source}, state)
            for i, (analysis, parts) in enumerate(asked):
                params: dict[str, Any] = {"filter": as_filter(parts)}
                if analysis == "crosstab":
                    params |= {"rows": "smoker", "columns": "sex"}
                task = TaskSpec(f"t{i}", 1, "tre-a", analysis, "cohort", params, "p")
                output = executor.run(task)
                if output.outcome not in (Outcome.RELEASED, Outcome.SUPPRESSED):
                    assert output.payload == {} or output.payload.get("n") is None
                    continue
                # no released count below the threshold (zeros are withheld by default)
                counts = (
                    [output.payload["n"]]
                    if analysis == "count"
                    else [c for _, _, c in output.payload["cells"]]
                )
                assert all(c is None or c >= T for c in counts)
                selected = mask(frame, parts)
                if parts is not None:
                    assert selected.sum() >= T and (~selected).sum() >= T
                released.append(selected)
        source.engine.dispose()
    for a, b in itertools.combinations(released, 2):
        difference = int((a ^ b).sum())
        assert difference == 0 or difference >= T
