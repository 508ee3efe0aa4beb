"""Agent sovereignty: the TRE's own config and its operator decide, whatever the coordinator says.

tre-b serves less than the coordinator believes (its advertisement is widened in the
coordinator's database, as a coordinator ignoring its nodes would): one analysis, one
dataset with one column, one project. tre-c's operator approves each new project, tre-d's
each job, through `fedtre agent inbox`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest
from sectools import (
    OPEN_POLICY,
    agent_events,
    agent_tasks,
    cli,
    data,
    events,
    head,
    start,
    wait_for,
)

from fedtre.disclosure.release import PLAIN_WORDS
from fedtre.disclosure.rules import OPERATOR_APPROVAL
from fedtre.notebook import node_outcome
from fedtre.testing import LocalNetwork
from node_agent.app import Agent
from node_agent.config import load_config, write_config
from node_agent.sovereignty import GovernanceConfig

WAIT = 20


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    nodes = data("tre-a", "tre-b", "tre-c", "tre-d")
    network = start(
        LocalNetwork(
            nodes,
            policy=OPEN_POLICY,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("agent"),
            governance={
                "tre-c": {"operator_approval": "project"},
                "tre-d": {"operator_approval": "job"},
            },
        )
    )
    # tre-b's operator narrows what it serves, and restarts it.
    path = network.directory / "nodes" / "tre-b" / "agent.toml"
    network.stop_agent("tre-b")
    config = load_config(path)
    cohort = config.datasets["cohort"]
    config = write_config(
        path,
        replace(
            config,
            analyses=("count",),
            datasets={"cohort": replace(cohort, columns={"age": cohort.columns["age"]})},
            governance=GovernanceConfig(projects=("default",)),
        ),
    )
    agent = Agent(config)
    agent.start()
    network.agents["tre-b"] = agent
    network.wait_until_online(["tre-b"])
    # The coordinator is made to believe tre-b serves all that tre-a does.
    with sqlite3.connect(network.directory / "coordinator.sqlite") as conn:
        conn.execute(
            "UPDATE nodes SET datasets = (SELECT datasets FROM nodes WHERE node_id = 'tre-a'), "
            "analyses = (SELECT analyses FROM nodes WHERE node_id = 'tre-a') "
            "WHERE node_id = 'tre-b'"
        )
    network.add_project(
        "elsewhere", nodes=("tre-b", "tre-c"), datasets=("cohort",), analyses=("count",)
    )
    network.add_project("denied", nodes=("tre-c",), datasets=("cohort",), analyses=("count",))
    yield network
    network.stop()


def config_of(net: LocalNetwork, node: str) -> str:
    return str(net.directory / "nodes" / node / "agent.toml")


# -- the TRE's local config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("analysis", "params", "project", "reason"),
    [
        ("crosstab", {"rows": "age"}, "default", "analysis 'crosstab' is not served"),
        ("count", {"filter": {"col": "sex", "op": "==", "value": "F"}}, "default", "sex"),
        ("count", {}, "elsewhere", "project 'elsewhere' is not served"),
    ],
    ids=["analysis", "column", "project"],
)
def test_a_task_outside_the_agents_config_is_refused_there_and_reported(
    net, analysis, params, project, reason
):
    before = head(net)
    with net.client() as researcher:
        handle = researcher.submit(
            analysis, dataset="cohort", params=params, nodes=["tre-b"], project=project
        )
        result = researcher.handle(handle.id).result(WAIT)
    task = result.nodes["tre-b"]
    assert task.outcome == "refused" and reason in task.error
    # Reported, and in the coordinator's audit log as tre-b's refusal;
    reported = [e for e in events(net, before, "task.reported") if e.actor == "tre-b"]
    assert [e.details["outcome"] for e in reported] == ["refused"]
    # recorded at the agent as refused, and nothing left the TRE.
    finished = [
        e
        for e in agent_events(net, "tre-b", "task.finished")
        if e.subject == f"task:{task.task_id}"
    ]
    assert [e.details["outcome"] for e in finished] == ["refused"]
    released = agent_events(net, "tre-b", "output.released")
    assert f"task:{task.task_id}" not in {e.subject for e in released}


def test_a_dataset_the_agent_does_not_declare_is_refused(net):
    # The coordinator believes tre-b has a second dataset.
    with sqlite3.connect(net.directory / "coordinator.sqlite") as conn:
        (raw,) = conn.execute("SELECT datasets FROM nodes WHERE node_id = 'tre-b'").fetchone()
        schemas = json.loads(raw)
        schemas.append({**schemas[0], "name": "registry"})
        conn.execute(
            "UPDATE nodes SET datasets = ? WHERE node_id = 'tre-b'", (json.dumps(schemas),)
        )
    net.add_project("registry", nodes=("tre-b",), datasets=("registry",), analyses=("count",))
    with net.client() as researcher:
        handle = researcher.submit("count", dataset="registry", project="registry")
        task = researcher.handle(handle.id).result(WAIT).nodes["tre-b"]
    assert task.outcome == "refused" and "dataset 'registry' is not declared" in task.error


# -- the TRE operator's approval inbox -------------------------------------------------------


def inbox(capsys, net: LocalNetwork, node: str, *argv: str) -> tuple[int, str, str]:
    return cli(capsys, "agent", "inbox", *argv, "--config", config_of(net, node))


def pending_requests(capsys, net: LocalNetwork, node: str) -> list[dict]:
    code, out, _ = inbox(capsys, net, node, "list", "--json")
    assert code == 0
    return [r for r in json.loads(out) if "request_id" in r and r["status"] == "pending"]


def test_a_new_project_waits_for_the_tre_operator_and_runs_once_approved(net, capsys):
    # Given tre-c's operator approves each new project,
    with net.client() as researcher:
        handle = researcher.submit(
            "count", dataset="cohort", nodes=["tre-c"], params={}, project="elsewhere"
        )
        wait_for(lambda: researcher.job(handle.id).tasks["tre-c"].outcome == "held", what="hold")
        job = researcher.job(handle.id)
        task_id = job.tasks["tre-c"].task_id
    # the researcher is told what it waits for (not an output checker, not a disclosure rule);
    waiting = job.tasks["tre-c"]
    assert (
        node_outcome(job, waiting) == "waiting for its TRE's operator to approve the project or job"
    )
    assert [(r.rule, r.detail) for r in waiting.rules] == [
        (OPERATOR_APPROVAL, PLAIN_WORDS[OPERATOR_APPROVAL])
    ]
    # the task waits: not run, nothing released, and the inbox shows what it would do;
    assert task_id not in agent_tasks(net, "tre-c")
    (request,) = pending_requests(capsys, net, "tre-c")
    assert (request["kind"], request["project"], request["analysis"]) == (
        "project", "elsewhere", "count",
    )  # fmt: skip
    assert request["approved_by"] == ["auto-approval"] and request["waiting_tasks"] == 1
    code, out, _ = inbox(capsys, net, "tre-c", "show", request["request_id"])
    assert code == 0 and "project 'elsewhere'" in out and "outputs" in out
    # when the operator approves it with the CLI,
    code, out, _ = inbox(capsys, net, "tre-c", "approve", request["request_id"], "--checker", "op")
    assert code == 0 and "approved" in out
    # then the running agent runs it and the result arrives,
    with net.client() as researcher:
        result = researcher.handle(handle.id).result(WAIT)
        assert result.nodes["tre-c"].outcome == "released"
        # and a later job of the same project runs without asking again.
        again = researcher.submit("count", dataset="cohort", nodes=["tre-c"], project="elsewhere")
        assert again.result(WAIT).nodes["tre-c"].outcome == "released"
    assert pending_requests(capsys, net, "tre-c") == []
    decided = agent_events(net, "tre-c", "operator.approved")
    assert [(e.actor, e.subject) for e in decided] == [("op", "project:elsewhere")]


def test_a_project_the_tre_operator_denies_is_refused_with_the_reason(net, capsys):
    with net.client() as researcher:
        handle = researcher.submit("count", dataset="cohort", project="denied")
        wait_for(lambda: researcher.job(handle.id).tasks["tre-c"].outcome == "held", what="hold")
    (request,) = pending_requests(capsys, net, "tre-c")
    code, _, _ = inbox(
        capsys, net, "tre-c", "deny", request["request_id"], "--checker", "op",
        "--reason", "not in our remit",
    )  # fmt: skip
    assert code == 0
    with net.client() as researcher:
        result = researcher.handle(handle.id).result(WAIT)
    task = result.nodes["tre-c"]
    assert task.outcome == "refused" and "not in our remit" in task.error
    assert task.task_id not in {
        e.subject.removeprefix("task:") for e in agent_events(net, "tre-c", "output.released")
    }
    assert [e.subject for e in agent_events(net, "tre-c", "operator.denied")] == ["project:denied"]


def test_with_approval_per_job_each_job_waits_for_its_own_decision(net, capsys):
    with net.client() as researcher:
        first = researcher.submit("count", dataset="cohort", nodes=["tre-d"])
        wait_for(lambda: researcher.job(first.id).tasks["tre-d"].outcome == "held", what="hold")
        (request,) = pending_requests(capsys, net, "tre-d")
        assert (request["kind"], request["job_id"]) == ("job", first.id)
        assert (
            inbox(capsys, net, "tre-d", "approve", request["request_id"], "--checker", "op")[0] == 0
        )
        assert first.result(WAIT).nodes["tre-d"].outcome == "released"
        # The next job of the same project asks again.
        second = researcher.submit("count", dataset="cohort", nodes=["tre-d"])
        wait_for(lambda: researcher.job(second.id).tasks["tre-d"].outcome == "held", what="hold")
        (request,) = pending_requests(capsys, net, "tre-d")
        assert request["job_id"] == second.id
        task_id = researcher.job(second.id).tasks["tre-d"].task_id
    assert task_id not in agent_tasks(net, "tre-d")
