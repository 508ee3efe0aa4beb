"""The agent's log for a query its database refuses: one line, no SQL, no values, no retries."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fedtre import logs
from fedtre.analyses import get_analysis
from fedtre.analyses.base import Outcome
from fedtre.disclosure import DisclosurePolicy
from node_agent.executor import GENERIC_FAILURE, Executor, TaskSpec
from node_agent.policy import LocalPolicy

MARKER = 987_654_321


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("DEBUG", stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved


def test_255_thousand_in_values_fail_at_once_in_one_sql_free_line(
    source: Any, state: Any, captured: io.StringIO
) -> None:
    policy = LocalPolicy(
        node_id="tre-a",
        analyses={"count": get_analysis("count")},
        disclosure=DisclosurePolicy(threshold=0, rounding_base=1),
        datasets={"cohort": source.schema},
    )
    # Long waits between retries: a retry of this query would show as a slow test.
    executor = Executor(policy, {"cohort": source}, state, retry_delays=(30.0, 30.0))
    huge = {
        "or": [
            {"col": "age", "op": "in", "value": [MARKER + i * 1000 + j for j in range(1000)]}
            for i in range(255)
        ]
    }
    task = TaskSpec(
        task_id="t-huge", job_id=1, node="tre-a", analysis="count", dataset="cohort",
        params={"filter": huge},
    )  # fmt: skip

    output = executor.run(task)

    assert (output.outcome, output.error) == (Outcome.FAILED, GENERIC_FAILURE)
    text = captured.getvalue()
    assert str(MARKER) not in text and "SELECT" not in text and "[SQL" not in text
    events = [json.loads(line) for line in text.splitlines()]
    about = [e for e in events if e.get("task_id") == "t-huge"]
    assert [e["level"] for e in about if e["level"] in ("warning", "error")] == ["error"]
    (failure,) = [e for e in about if e["level"] == "error"]
    assert "OperationalError" in failure["event"] and len(json.dumps(failure)) < 1000
