"""Executor: tasks run under local policy, outputs are checked, recorded and released once."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fedtre.analyses.base import DataSource, NodeOutput, Outcome, RuleResult
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import FedtreError
from node_agent.executor import GENERIC_FAILURE, Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.state import AgentState


def make_executor(
    analysis: Any, source: DataSource, state: AgentState, threshold: int = 10
) -> Executor:
    policy = LocalPolicy(
        node_id="tre-a",
        analyses={analysis.name: analysis},
        disclosure=DisclosurePolicy(threshold=threshold, rounding_base=5),
        datasets={"cohort": source.schema},
    )
    return Executor(policy, {"cohort": source}, state)


def task(task_id: str = "t-1", **changes: Any) -> TaskSpec:
    base: dict[str, Any] = dict(
        task_id=task_id, job_id=3, node="tre-a", analysis="rowcount", dataset="cohort", params={}
    )
    return TaskSpec(**{**base, **changes})


def test_task_runs_and_its_checked_output_is_recorded(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    executor = make_executor(row_count, source, state)

    output = executor.run(task(params={"columns": ["bmi"]}))

    # 20 rows have a bmi; rounded to base 5. Around the analysis's own rules, the agent
    # adds its cohort rules first: the cohort's size and differencing, measured before
    # anything is computed.
    assert (output.outcome, output.payload) == (Outcome.RELEASED, {"n": 20})
    assert [r.rule for r in output.rules] == ["cohort_size", "differencing", "threshold"]
    assert all(r.passed for r in output.rules)
    assert state.stored_result("t-1") == output
    assert state.released_count() == 1


def test_redelivered_task_returns_stored_result_without_computing(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    executor = make_executor(row_count, source, state)
    first = executor.run(task())

    again = executor.run(task())

    assert again == first
    assert row_count.computed == 1
    assert state.released_count() == 1


def test_redelivery_after_restart_computes_nothing(
    row_count: Any, source: DataSource, tmp_path: Path
) -> None:
    # Given a task run before the agent restarted
    path = tmp_path / "state.sqlite"
    with AgentState(path) as before:
        first = make_executor(row_count, source, before).run(task())

    # When the coordinator redelivers it to the restarted agent
    with AgentState(path) as after:
        again = make_executor(row_count, source, after).run(task())
        released = after.released_count()

    # Then the stored output is returned and nothing is computed or released again
    assert again == first
    assert row_count.computed == 1
    assert released == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"node": "tre-b"}, "task is addressed to node 'tre-b', but this node is 'tre-a'"),
        ({"analysis": "summary"}, "analysis 'summary' is not served by this node"),
        ({"dataset": "gp_records"}, "dataset 'gp_records' is not declared by this node"),
        ({"params": {"columns": ["secret"]}}, "column 'secret' is not declared"),
        ({"params": {"sql": "select *"}}, "invalid parameters for 'rowcount'"),
    ],
    ids=["wrong-node", "analysis-not-allowed", "undeclared-dataset", "undeclared-column", "bad"],
)
def test_refused_task_touches_no_data_and_releases_nothing(
    row_count: Any, source: DataSource, state: AgentState, changes: dict, reason: str
) -> None:
    executor = make_executor(row_count, source, state)

    output = executor.run(task(**changes))

    assert output.outcome is Outcome.REFUSED
    assert reason in output.error
    assert output.payload == {}
    assert row_count.computed == 0
    assert state.released_count() == 0
    assert state.stored_result("t-1") == output


def test_output_below_threshold_is_blocked(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    output = make_executor(row_count, source, state, threshold=50).run(task())

    assert output.outcome is Outcome.BLOCKED
    assert output.payload == {}
    assert state.released_count() == 0


class Exploding:
    """A test analysis whose computation fails the way a driver or bug would."""

    name = "rowcount"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return dict(params)

    def schema_problems(self, params: Mapping[str, Any], schema: Any) -> list[str]:
        return []

    def cohort_filter(self, params: Mapping[str, Any]) -> None:
        return None

    def universe_filter(self, params: Mapping[str, Any]) -> None:
        return None

    def groupings(self, params: Mapping[str, Any]) -> list[tuple[str, ...]]:
        return []

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        raise self.error


def test_unexpected_error_fails_with_a_generic_message_and_logs_the_traceback(
    source: DataSource, state: AgentState, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an analysis failing with a message that contains a data value
    analysis = Exploding(ValueError("cannot convert patient value 'Smith, 1961-04-02'"))
    executor = make_executor(analysis, source, state)

    with caplog.at_level(logging.INFO, logger="node_agent.executor"):
        output = executor.run(task())

    # Then the public error is generic and the traceback stays in the local log
    assert output == NodeOutput(Outcome.FAILED, {}, (), GENERIC_FAILURE)
    assert "Smith" not in output.error
    failure = next(r for r in caplog.records if r.getMessage() == "task failed")
    assert failure.exc_info is not None and failure.task_id == "t-1"  # type: ignore[attr-defined]
    assert state.stored_result("t-1") == output


def test_a_database_error_is_logged_in_one_line_without_sql_or_values(
    source: DataSource, state: AgentState, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a query the database refuses, whose statement carries a record-key seed and a
    # bound value (as the cell-key SQL does)
    error = sa.exc.ProgrammingError(
        "SELECT md5('1b53109d90886df1:' || name) FROM cohort WHERE name = ?",
        ("Smith",),
        sqlite3.ProgrammingError("no such column: name"),
    )
    executor = make_executor(Exploding(error), source, state)

    with caplog.at_level(logging.INFO, logger="node_agent.executor"):
        output = executor.run(task())

    # Then the researcher sees the generic failure, and the log has one line that names
    # the kind of error only
    assert output == NodeOutput(Outcome.FAILED, {}, (), GENERIC_FAILURE)
    logged = "\n".join(caplog.text.splitlines())
    assert "1b53109d90886df1" not in logged and "Smith" not in logged
    assert "SELECT" not in logged and "no such column" not in logged
    failure = next(r for r in caplog.records if r.getMessage().startswith("task failed"))
    assert failure.exc_info is None and "ProgrammingError" in failure.getMessage()


def test_public_fedtre_error_is_passed_on(source: DataSource, state: AgentState) -> None:
    analysis = Exploding(FedtreError("the filter compares 'age' with text; use a number"))
    output = make_executor(analysis, source, state).run(task())
    assert output.outcome is Outcome.FAILED
    assert output.error == "the filter compares 'age' with text; use a number"


class LeakyBlock(Exploding):
    """A faulty analysis that blocks an output but leaves its payload in place."""

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        return {"n": 3}

    def check(self, params: Any, raw: Mapping[str, Any], policy: Any) -> NodeOutput:
        return NodeOutput(Outcome.BLOCKED, {"n": 3}, (RuleResult("threshold", False, "n < 10"),))


def test_a_blocked_output_never_carries_a_payload(source: DataSource, state: AgentState) -> None:
    output = make_executor(LeakyBlock(ValueError()), source, state).run(task())

    assert output.outcome is Outcome.BLOCKED
    assert output.payload == {}
    assert state.stored_result("t-1") == output


def test_finished_task_is_logged_with_ids_and_outcome(
    row_count: Any, source: DataSource, state: AgentState, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="node_agent.executor"):
        make_executor(row_count, source, state).run(task())

    record = next(r for r in caplog.records if r.getMessage() == "task finished")
    assert (record.task_id, record.job_id, record.outcome) == ("t-1", 3, "released")  # type: ignore[attr-defined]
    assert all("payload" not in vars(r) for r in caplog.records)


def test_overlapping_deliveries_compute_once(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    # Given a run in progress, held inside compute
    entered, release = threading.Event(), threading.Event()
    original = row_count.compute

    def held(params: Mapping[str, Any], src: DataSource) -> dict[str, Any]:
        entered.set()
        assert release.wait(10)
        return original(params, src)

    row_count.compute = held
    executor = make_executor(row_count, source, state)
    outputs: list[NodeOutput] = []
    first = threading.Thread(target=lambda: outputs.append(executor.run(task())))
    first.start()
    assert entered.wait(10)

    # When the same task is delivered again meanwhile
    second = threading.Thread(target=lambda: outputs.append(executor.run(task())))
    second.start()
    release.set()
    first.join(10)
    second.join(10)

    # Then it was computed and released once, and both deliveries got the same output
    assert row_count.computed == 1
    assert len(outputs) == 2 and outputs[0] == outputs[1]
    assert state.released_count() == 1


def test_later_rounds_of_a_job_reuse_its_measured_cohort(
    row_count: Any, source: DataSource, state: AgentState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an executor that counts how often it reads a cohort's records,
    import node_agent.executor as executor_module
    from fedtre.disclosure import differencing

    measured: list[int] = []
    real_measure = differencing.measure_cohort

    def counting_measure(*args: Any, **kwargs: Any) -> Any:
        measured.append(1)
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(differencing, "measure_cohort", counting_measure)
    # (row_count is single-round: let rounds pass through unchanged)
    monkeypatch.setattr(executor_module, "with_round", lambda _a, params, _r: params)
    executor = make_executor(row_count, source, state, threshold=5)

    # when three rounds of one job run, then a round of another job,
    outputs = [executor.run(task(f"r{k}", job_id=7, round={"iteration": k})) for k in (1, 2, 3)]
    other = executor.run(task("other", job_id=8, round={"iteration": 1}))

    # then the records are read once per job, and every round still passes differencing.
    assert len(measured) == 2
    for output in [*outputs, other]:
        assert output.outcome is Outcome.RELEASED
        assert any(r.rule == "differencing" and r.passed for r in output.rules)


def test_single_round_tasks_measure_their_cohort_every_time(
    row_count: Any, source: DataSource, state: AgentState, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtre.disclosure import differencing

    measured: list[int] = []
    real_measure = differencing.measure_cohort
    monkeypatch.setattr(
        differencing,
        "measure_cohort",
        lambda *a, **k: measured.append(1) or real_measure(*a, **k),
    )
    executor = make_executor(row_count, source, state, threshold=5)

    for k in (1, 2):
        executor.run(task(f"s{k}", job_id=7))

    assert len(measured) == 2
