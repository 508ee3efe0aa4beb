"""The agent's side of cancellation and of the maintenance pause; its concurrency limit."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_agent_executor import make_executor, task

from fedtre.analyses.base import DataSource, Outcome
from fedtre.errors import InvalidRequest
from node_agent import audit as agent_audit
from node_agent.config import DEFAULT_MAX_CONCURRENT_TASKS, AgentConfig, load_config
from node_agent.state import SCHEMA_VERSION, AgentState


class Blocking:
    """Wraps an analysis so that compute waits until released (a long-running task)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.started = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        self.started.set()
        assert self.release.wait(10)
        return self.inner.compute(params, source)  # type: ignore[no-any-return]


def test_a_task_cancelled_before_it_starts_never_runs_and_releases_nothing(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    executor = make_executor(row_count, source, state)

    executor.cancel("t-1", "job 3 was cancelled by alice")
    output = executor.run(task("t-1"))

    assert output.outcome is Outcome.FAILED and "cancelled by alice" in output.error
    assert output.payload == {}
    assert row_count.computed == 0
    assert state.released_count() == 0
    assert state.stored_result("t-1") == output  # a redelivery gets the same answer


def test_a_task_cancelled_while_it_runs_records_no_release(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    slow = Blocking(row_count)
    executor = make_executor(slow, source, state)
    outputs: list[Any] = []
    runner = threading.Thread(target=lambda: outputs.append(executor.run(task("t-1"))))
    runner.start()
    assert slow.started.wait(10)

    executor.cancel("t-1", "timed out")
    slow.release.set()
    runner.join(timeout=10)

    [output] = outputs
    assert output.outcome is Outcome.FAILED and output.payload == {}
    assert state.released_count() == 0
    released = [e for e in agent_audit.entries(state.engine) if e.event == "output.released"]
    assert released == []


def test_cancelling_a_finished_task_changes_nothing(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    executor = make_executor(row_count, source, state)
    first = executor.run(task("t-1"))

    executor.cancel("t-1", "too late")

    assert executor.run(task("t-1")) == first
    assert first.outcome is Outcome.RELEASED
    assert state.released_count() == 1


def test_pause_and_resume_are_recorded_once_and_outlive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.sqlite"
    with AgentState(path) as state:
        assert state.paused() is None
        first = state.pause("operator", "patch night")
        again = state.pause("someone-else", "other")
        assert again == first

    with AgentState(path) as state:
        pause = state.paused()
        assert pause is not None and (pause.by, pause.reason) == ("operator", "patch night")
        assert state.resume("operator") is True
        assert state.resume("operator") is False
        assert state.paused() is None
        events = [e.event for e in agent_audit.entries(state.engine)]
    assert events.count("agent.paused") == 1 and events.count("agent.resumed") == 1


def test_an_older_state_file_gains_the_settings_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with AgentState(path) as state:
        with state.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE settings")
            conn.exec_driver_sql("PRAGMA user_version = 3")
    with AgentState(path) as state:
        assert state.paused() is None
        state.pause("operator", "")
        with state.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA user_version").scalar_one() == SCHEMA_VERSION
            assert conn.execute(sa.text("SELECT count(*) FROM settings")).scalar_one() == 1


def test_the_concurrency_limit_is_read_from_the_config(write_toml: Any, tls_dir: Path) -> None:
    base = f"""
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
{{extra}}
[tls]
dir = "{tls_dir}"
[datasets.cohort]
url = "sqlite:///x.sqlite"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
"""
    default = load_config(write_toml(base.format(extra="")))
    four = load_config(write_toml(base.format(extra="max_concurrent_tasks = 4"), "four.toml"))

    assert default.max_concurrent_tasks == DEFAULT_MAX_CONCURRENT_TASKS
    assert four.max_concurrent_tasks == 4
    assert load_config(write_toml(four.to_toml(), "again.toml")) == four
    for bad in ("0", "1000", "2.5", '"4"', "true"):
        with pytest.raises(InvalidRequest, match="max_concurrent_tasks"):
            load_config(write_toml(base.format(extra=f"max_concurrent_tasks = {bad}"), "bad.toml"))
    assert isinstance(four, AgentConfig)


def test_a_task_interrupted_by_a_crash_runs_again_after_restart_and_is_released_once(
    row_count: Any, source: DataSource, tmp_path: Path
) -> None:
    path = tmp_path / "crash.sqlite"
    # Given an agent killed mid-task: the task was received, nothing was recorded after it
    with AgentState(path) as before:
        before.record_received(task("t-1"))
        assert before.stored_result("t-1") is None
    # When the restarted agent gets the task again (the coordinator redelivers it)
    with AgentState(path) as after:
        executor = make_executor(row_count, source, after)
        first = executor.run(task("t-1"))
        again = executor.run(task("t-1"))
        # Then it ran once more, and its output left once
        assert first.outcome is Outcome.RELEASED and again == first
        assert row_count.computed == 1
        assert after.released_count() == 1


def test_fedtre_agent_pause_and_resume(write_toml: Any, tls_dir: Path, tmp_path: Path, capsys):
    from fedtre.cli.main import main

    config = write_toml(
        f"""
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
state_db = "{tmp_path / "cli-state.sqlite"}"
[tls]
dir = "{tls_dir}"
[datasets.cohort]
url = "sqlite:///x.sqlite"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
"""
    )

    assert main(["agent", "pause", "--config", str(config), "--reason", "patch night"]) == 0
    assert "agent paused" in capsys.readouterr().out
    with AgentState(tmp_path / "cli-state.sqlite") as state:
        pause = state.paused()
        assert pause is not None and pause.reason == "patch night"

    assert main(["agent", "resume", "--config", str(config)]) == 0
    assert "resumed" in capsys.readouterr().out
    assert main(["agent", "resume", "--config", str(config)]) == 0
    assert "was not paused" in capsys.readouterr().out
    with AgentState(tmp_path / "cli-state.sqlite") as state:
        assert state.paused() is None


class Flaky:
    """Wraps an analysis so that its first `failures` computations fail transiently."""

    def __init__(self, inner: Any, failures: int, error: Exception | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.failures = failures
        self.calls = 0
        self.error = error or sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.inner.compute(params, source)  # type: ignore[no-any-return]


def retrying_executor(analysis: Any, source: DataSource, state: AgentState) -> Any:
    executor = make_executor(analysis, source, state)
    executor._retry_delays = (0.0, 0.0)  # two retries, no waiting in tests
    return executor


def test_a_transient_failure_is_retried_and_the_output_released_once(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    flaky = Flaky(row_count, failures=2)

    output = retrying_executor(flaky, source, state).run(task("t-1"))

    assert output.outcome is Outcome.RELEASED
    assert flaky.calls == 3
    assert state.released_count() == 1


def test_retries_are_bounded_and_then_the_task_fails_with_a_reason(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    flaky = Flaky(row_count, failures=10)

    output = retrying_executor(flaky, source, state).run(task("t-1"))

    assert output.outcome is Outcome.FAILED and "after 3 attempts" in output.error
    assert flaky.calls == 3
    assert state.released_count() == 0


def test_a_failure_that_is_not_transient_is_not_retried(
    row_count: Any, source: DataSource, state: AgentState
) -> None:
    flaky = Flaky(row_count, failures=10, error=ValueError("bug"))

    output = retrying_executor(flaky, source, state).run(task("t-1"))

    assert output.outcome is Outcome.FAILED
    assert flaky.calls == 1
