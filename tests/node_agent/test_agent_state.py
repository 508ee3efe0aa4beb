"""Agent state: each task's result is recorded once, survives reopening, and is released once."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.errors import Conflict, InvalidRequest, NotFound
from node_agent.state import AgentState, payload_digest
from node_agent.task import TaskSpec

TASK = TaskSpec("t-1", 7, "tre-a", "count", "cohort", {"where": {"age": 30.0}}, "proj")
RELEASED = NodeOutput(
    Outcome.RELEASED, {"n": 25.0, "cells": [1, 2]}, (RuleResult("threshold", True, "n >= 10"),)
)
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = AgentState(tmp_path / "state" / "agent.sqlite", clock=lambda: NOW)
    yield s
    s.close()


def test_unfinished_task_has_no_stored_result(state: AgentState) -> None:
    state.record_received(TASK)
    assert state.stored_result("t-1") is None
    assert state.stored_result("never-seen") is None


def test_recorded_result_is_returned_exactly(state: AgentState) -> None:
    state.record_received(TASK)
    state.record_result("t-1", RELEASED)
    assert state.stored_result("t-1") == RELEASED
    assert state.released_count() == 1


def test_result_survives_reopening_the_file(tmp_path: Path) -> None:
    # Given a result recorded, and the agent stopped
    path = tmp_path / "agent.sqlite"
    with AgentState(path) as first:
        first.record_received(TASK)
        first.record_result("t-1", RELEASED)

    # When the agent starts again on the same file
    with AgentState(path) as second:
        # Then the result and the release are still there
        assert second.stored_result("t-1") == RELEASED
        assert second.released_count() == 1


def test_a_result_is_recorded_and_released_only_once(state: AgentState) -> None:
    state.record_received(TASK)
    state.record_result("t-1", RELEASED)

    with pytest.raises(Conflict, match="already has a recorded result"):
        state.record_result("t-1", NodeOutput(Outcome.RELEASED, {"n": 30}))

    assert state.stored_result("t-1") == RELEASED
    assert state.released_count() == 1


def test_redelivery_of_the_same_task_is_a_no_op(state: AgentState) -> None:
    state.record_received(TASK)
    state.record_received(TaskSpec(**{**TASK.__dict__}))
    state.record_result("t-1", RELEASED)
    assert state.stored_result("t-1") == RELEASED


def test_reused_task_id_with_other_content_conflicts(state: AgentState) -> None:
    state.record_received(TASK)
    with pytest.raises(Conflict, match="received before with different content"):
        state.record_received(TaskSpec("t-1", 7, "tre-a", "count", "other", {}, "proj"))


def test_result_for_unknown_task_is_refused(state: AgentState) -> None:
    with pytest.raises(NotFound):
        state.record_result("ghost", RELEASED)
    assert state.released_count() == 0


@pytest.mark.parametrize("outcome", [Outcome.BLOCKED, Outcome.REFUSED, Outcome.FAILED])
def test_outputs_that_do_not_leave_are_not_logged_as_released(
    state: AgentState, outcome: Outcome
) -> None:
    state.record_received(TASK)
    output = NodeOutput(outcome, {}, (RuleResult("threshold", False, "n < 10"),), "why")
    state.record_result("t-1", output)
    assert state.stored_result("t-1") == output
    assert state.released_count() == 0


def test_release_log_holds_a_digest_not_the_payload(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    with AgentState(path, clock=lambda: NOW) as state:
        state.record_received(TASK)
        state.record_result("t-1", NodeOutput(Outcome.SUPPRESSED, {"cells": [None, 15]}))

    with closing(sqlite3.connect(path)) as conn, conn:
        rows = conn.execute(
            "SELECT task_id, job_id, outcome, payload_sha256 FROM releases"
        ).fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert rows == [("t-1", 7, "suppressed", payload_digest({"cells": [None, 15]}))]
    assert mode == "wal"


def test_state_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(InvalidRequest, match="written by a newer fedtre agent"):
        AgentState(path)
