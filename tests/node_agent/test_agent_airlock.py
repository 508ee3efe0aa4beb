"""The airlock: held outputs stay in the TRE until the output checker decides, then leave once."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedtre.analyses import DataSource, NodeOutput, Outcome, get_analysis
from fedtre.cli.main import main
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import Conflict, InvalidRequest, NotFound
from node_agent.airlock import Airlock, Courier
from node_agent.config import load_config
from node_agent.executor import Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.sql import open_sql_source
from node_agent.state import AgentState

COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}
_ids = itertools.count(1)


def make_executor(source: DataSource, state: AgentState, **policy: Any) -> Executor:
    local = LocalPolicy(
        node_id="tre-a",
        analyses={n: get_analysis(n) for n in ("count", "crosstab", "summary")},
        # counts rounded, not perturbed, so these tests of the airlock can state them
        disclosure=DisclosurePolicy.from_mapping({"perturbation": "rounding", **policy}),
        datasets={"cohort": source.schema},
    )
    return Executor(local, {"cohort": source}, state)


def spec(
    analysis: str = "count", project: str = "p1", task_id: str | None = None, **params: Any
) -> TaskSpec:
    return TaskSpec(
        task_id=task_id or f"t-{next(_ids)}",
        job_id=7,
        node="tre-a",
        analysis=analysis,
        dataset="cohort",
        params=params,
        project=project,
    )


def test_a_held_output_is_kept_in_the_tre_and_reported_as_held(
    source: DataSource, state: AgentState
) -> None:
    ex = make_executor(source, state, hold_for_review=["count"])

    output = ex.run(spec(task_id="t-held"))

    assert output.outcome is Outcome.HELD
    assert output.payload == {}  # nothing leaves yet
    review = next(r for r in output.rules if r.rule == "review")
    assert not review.passed and "output checker reviews count outputs" in review.detail
    assert state.released_count() == 0
    [held] = Airlock(state).list()
    assert held.task_id == "t-held" and held.candidate.payload == {"n": 25}  # 23 rounded
    assert held.candidate.outcome is Outcome.RELEASED


def test_a_redelivered_held_task_is_not_recomputed(source: DataSource, state: AgentState) -> None:
    ex = make_executor(source, state, hold_for_review=["*"])
    first = ex.run(spec(task_id="t-1"))
    assert ex.run(spec(task_id="t-1")) == first
    assert len(Airlock(state).list()) == 1


def test_only_the_held_analysis_and_project_are_held(source: DataSource, state: AgentState) -> None:
    ex = make_executor(
        source, state, hold_for_review=["summary"], projects={"rare": {"hold_for_review": True}}
    )
    assert ex.run(spec("count")).outcome is Outcome.RELEASED
    assert ex.run(spec("summary", column="age")).outcome is Outcome.HELD
    assert ex.run(spec("count", project="rare")).outcome is Outcome.HELD


def test_approval_releases_the_held_output_exactly_once(
    source: DataSource, state: AgentState
) -> None:
    ex = make_executor(source, state, hold_for_review=["count"])
    ex.run(spec(task_id="t-a"))
    reported: list[tuple[str, NodeOutput]] = []
    courier = Courier(state, lambda task_id, out: reported.append((task_id, out)) or True)

    final = Airlock(state).approve("t-a", checker="jo", reason="fine")

    assert (final.outcome, final.payload) == (Outcome.RELEASED, {"n": 25})
    verdict = next(r for r in final.rules if r.rule == "review")
    assert verdict.passed and verdict.detail == "approved by output checker jo: fine"
    assert state.released_count() == 1
    assert state.stored_result("t-a") == final  # a redelivery now gets the final output
    assert courier.deliver_once() == 1
    assert courier.deliver_once() == 0
    assert reported == [("t-a", final)]
    decided = state.review("t-a")
    assert (decided.decision, decided.decided_by) == ("approved", "jo")
    assert decided.reported_at is not None


def test_denial_blocks_with_the_checkers_reason(source: DataSource, state: AgentState) -> None:
    ex = make_executor(source, state, hold_for_review=["count"])
    ex.run(spec(task_id="t-d"))

    final = Airlock(state).deny("t-d", checker="jo", reason="the cohort is too identifiable")

    assert final.outcome is Outcome.BLOCKED and final.payload == {}
    assert "too identifiable" in final.error
    verdict = next(r for r in final.rules if r.rule == "review")
    assert not verdict.passed and "denied by output checker jo" in verdict.detail
    assert state.released_count() == 0


def test_a_decision_is_made_once_and_a_denial_needs_a_reason(
    source: DataSource, state: AgentState
) -> None:
    ex = make_executor(source, state, hold_for_review=["count"])
    ex.run(spec(task_id="t-x"))
    airlock = Airlock(state)
    with pytest.raises(InvalidRequest, match="reason"):
        airlock.deny("t-x", checker="jo", reason=" ")
    airlock.approve("t-x", checker="jo")
    with pytest.raises(Conflict, match="already approved by jo"):
        airlock.deny("t-x", checker="sam", reason="changed my mind")
    with pytest.raises(NotFound):
        airlock.approve("t-unknown", checker="jo")


def test_a_report_that_does_not_get_through_is_tried_again(
    source: DataSource, state: AgentState
) -> None:
    ex = make_executor(source, state, hold_for_review=["count"])
    ex.run(spec(task_id="t-r"))
    Airlock(state).approve("t-r", checker="jo")
    attempts: list[str] = []

    def flaky(task_id: str, output: NodeOutput) -> bool:
        attempts.append(task_id)
        return len(attempts) > 1  # the first attempt finds the agent stopping

    courier = Courier(state, flaky)
    assert courier.deliver_once() == 0
    assert courier.deliver_once() == 1
    assert attempts == ["t-r", "t-r"]


def test_negative_values_hold_a_summary_even_without_a_hold_setting(
    tmp_path: Path, state: AgentState
) -> None:
    import sqlite3

    path = tmp_path / "money.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cohort (age INTEGER, sex TEXT, bmi REAL)")
    conn.executemany(
        "INSERT INTO cohort VALUES (?, ?, ?)",
        [(30 + i, "F", -2.0 if i == 0 else 25.0) for i in range(30)],
    )
    conn.commit()
    conn.close()
    source = open_sql_source("cohort", f"sqlite:///{path}", "cohort", COLUMNS)
    try:
        output = make_executor(source, state).run(spec("summary", column="bmi"))
    finally:
        source.engine.dispose()
    assert output.outcome is Outcome.HELD
    assert any("negative values" in r.detail for r in output.rules)


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def agent_toml(write_toml: Callable[..., Path], cohort_db: Path) -> Path:
    return write_toml(
        f"""
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
state_db = "agent-state.sqlite"
[tls]
dir = "bundle"
[policy]
hold_for_review = ["count"]
perturbation = "rounding"
[datasets.cohort]
url = "sqlite:///{cohort_db}"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
sex = "string"
bmi = "float"
"""
    )


def held_by_agent(agent_toml: Path, source: DataSource) -> str:
    config = load_config(agent_toml)
    with AgentState(config.state_db) as st:
        local = LocalPolicy.from_config(config)
        Executor(local, {"cohort": source}, st).run(spec(task_id="3f2a9c1e-aaaa"))
    return "3f2a9c1e-aaaa"


def test_inbox_lists_shows_and_approves(
    agent_toml: Path, source: DataSource, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = held_by_agent(agent_toml, source)
    config = ["--config", str(agent_toml)]

    assert main(["agent", "inbox", "list", *config]) == 0
    assert task_id in capsys.readouterr().out

    assert main(["agent", "inbox", "show", "3f2a", *config]) == 0
    shown = capsys.readouterr().out
    assert "count on dataset 'cohort'" in shown
    assert "[FAIL] review:" in shown and "[pass] threshold:" in shown
    assert '{"n": 25}' in shown  # exactly what would leave

    assert main(["agent", "inbox", "approve", "3f2a", "--checker", "jo", *config]) == 0
    assert "approved" in capsys.readouterr().out
    assert main(["agent", "inbox", "list", *config]) == 0
    assert "no held outputs await a decision" in capsys.readouterr().out
    with AgentState(load_config(agent_toml).state_db) as st:
        assert st.review(task_id).decided_by == "jo"


def test_inbox_deny_records_the_reason_and_json_is_for_scripts(
    agent_toml: Path, source: DataSource, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = held_by_agent(agent_toml, source)
    config = ["--config", str(agent_toml)]

    code = main(
        [
            "agent",
            "review",
            "reject",
            task_id,
            "--reason",
            "rare condition",
            "--checker",
            "sam",
            *config,
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["agent", "inbox", "list", "--all", "--json", *config]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert (item["status"], item["decided_by"], item["reason"]) == (
        "denied",
        "sam",
        "rare condition",
    )

    assert main(["agent", "inbox", "approve", task_id, "--checker", "jo", *config]) == 2
    assert "already denied" in capsys.readouterr().err
