"""The agent's /metrics, /livez and /readyz, and its [metrics] config key."""

from __future__ import annotations

import dataclasses
import socket
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from ops_testkit import DATA, http_get, scrape, value, wait_for

from fedtre.errors import InvalidRequest
from fedtre.testing import LocalNetwork
from node_agent.app import Agent
from node_agent.config import load_config, write_config


def test_agent_metrics_count_its_tasks_by_outcome_and_rule():
    with LocalNetwork(DATA, metrics=True) as net:
        researcher = net.client()
        # Given two counts and a crosstab answered by every node,
        results = [
            researcher.submit("count", dataset="cohort").result(timeout=20) for _ in range(2)
        ]
        results.append(
            researcher.submit("crosstab", dataset="cohort", params={"rows": "sex"}).result(
                timeout=20
            )
        )
        # when each agent is scraped,
        scraped = {node: scrape(agent.metrics_port) for node, agent in net.agents.items()}

    # then its task counts and rule checks match what it reported for those jobs,
    for node, samples in scraped.items():
        outcomes = Counter((r.job.analysis, r.nodes[node].outcome) for r in results)
        for (analysis, outcome), count in outcomes.items():
            assert (
                value(samples, "fedtre_agent_tasks_total", analysis=analysis, outcome=outcome)
                == count
            )
        assert sum(v for (n, _), v in samples.items() if n == "fedtre_agent_tasks_total") == 3
        assert value(samples, "fedtre_agent_task_duration_seconds_count", analysis="count") == 2
        checks = Counter(
            (rule.rule, "passed" if rule.passed else "failed")
            for r in results
            for rule in r.nodes[node].rules
        )
        for (rule, result), count in checks.items():
            assert (
                value(samples, "fedtre_agent_disclosure_checks_total", rule=rule, result=result)
                == count
            )
        # each task ran at least one query on the node's data source, none failed,
        assert (
            value(samples, "fedtre_agent_source_query_duration_seconds_count", dataset="cohort")
            >= 3
        )
        assert value(samples, "fedtre_agent_source_query_errors_total", dataset="cohort") == 0
        # and the agent is connected, idle, and says who it is.
        assert value(samples, "fedtre_agent_connected") == 1
        assert value(samples, "fedtre_agent_tasks_in_progress") == 0
        assert value(samples, "fedtre_agent_tasks_redelivered_total") == 0
        assert value(samples, "fedtre_agent_info", node=node, version="0.1.0") == 1


def test_a_failing_data_source_is_counted_and_shown_as_a_failed_task():
    with LocalNetwork(DATA, metrics=True) as net:
        # Given tre-b's table dropped behind its agent's back,
        path = net.directory / "nodes" / "tre-b" / "cohort.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE cohort"))
        engine.dispose()
        # when a count runs,
        result = net.client().submit("count", dataset="cohort").result(timeout=20)
        samples = scrape(net.agents["tre-b"].metrics_port)

    # then tre-b reports the task failed, and its query error is counted.
    assert result.nodes["tre-b"].outcome == "failed"
    assert value(samples, "fedtre_agent_tasks_total", analysis="count", outcome="failed") == 1
    assert value(samples, "fedtre_agent_source_query_errors_total", dataset="cohort") >= 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_agent_is_live_but_not_ready_until_its_task_stream_is_open(tmp_path):
    with LocalNetwork({"tre-a": DATA["tre-a"]}, metrics=True) as net:
        connected = net.agents["tre-a"]
        # Given an agent connected to the network, it is live and ready.
        assert http_get(connected.metrics_port, "/livez")[0] == 200
        wait_for(lambda: http_get(connected.metrics_port, "/readyz")[0] == 200, what="ready")

        # When the same node's agent dials a coordinator that is not there,
        config = dataclasses.replace(
            connected.config,
            coordinator=f"127.0.0.1:{_closed_port()}",
            state_db=tmp_path / "agent-state.sqlite",
        )
        agent = Agent(config)
        agent.start()
        try:
            # then it is live but not ready, and counts each attempt to reconnect.
            assert http_get(agent.metrics_port, "/livez")[0] == 200
            assert http_get(agent.metrics_port, "/readyz")[0] == 503
            wait_for(
                lambda: value(scrape(agent.metrics_port), "fedtre_agent_reconnects_total") >= 1,
                what="a reconnect",
            )
            samples = scrape(agent.metrics_port)
            assert value(samples, "fedtre_agent_connected") == 0
            assert http_get(agent.metrics_port, "/nothing")[0] == 404
        finally:
            agent.stop()


def _config_text(home: Path, metrics: str) -> str:
    (home / "tls").mkdir()
    for name in ("ca", "cert", "key"):
        (home / "tls" / f"{name}.pem").write_text("placeholder")
    (home / "data.csv").write_text("age\n30\n")
    return f"""
node_id = "tre-a"
coordinator = "coordinator.example.org:50051"
{metrics}
[tls]
dir = "tls"

[datasets.cohort]
csv = "data.csv"

[datasets.cohort.columns]
age = "integer"
"""


def test_metrics_listen_is_read_and_written_back(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(_config_text(tmp_path, '[metrics]\nlisten = "0.0.0.0:9464"\n'))

    config = load_config(path)

    assert config.metrics_listen == "0.0.0.0:9464"
    assert write_config(tmp_path / "again.toml", config) == config


def test_without_metrics_section_no_endpoint_is_served(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(_config_text(tmp_path, ""))

    assert load_config(path).metrics_listen is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[metrics]\nlisten = "9464"\n', "[metrics] listen"),
        ('[metrics]\nlisten = "127.0.0.1:99999"\n', "[metrics] listen"),
        ("[metrics]\nlisten = 9464\n", "[metrics] listen"),
        ('[metrics]\nport = "9464"\n', "unknown key(s) ['port']"),
        ('metrics = "127.0.0.1:9464"\n', "[metrics]"),
    ],
)
def test_a_bad_metrics_section_is_refused_with_where_and_how(tmp_path, section, message):
    path = tmp_path / "agent.toml"
    path.write_text(_config_text(tmp_path, section))

    with pytest.raises(InvalidRequest) as info:
        load_config(path)

    assert message in str(info.value)


def test_a_review_hold_is_no_failed_check_and_an_approved_output_counts_as_released():
    from fedtre.client import Result
    from node_agent.airlock import Airlock

    # Given a node whose TRE holds counts for its output checker,
    data = {"tre-a": DATA["tre-a"]}
    with LocalNetwork(data, metrics=True, policy={"hold_for_review": ["count"]}) as net:
        agent = net.agents["tre-a"]
        client = net.client()
        handle = client.submit("count", dataset="cohort")
        wait_for(lambda: handle.status().held_count == 1, what="the count held")
        # when the agent is scraped while the output waits,
        held = scrape(agent.metrics_port)
        # and again after the checker approves it and the job completes,
        task_id = handle.status().tasks["tre-a"].task_id
        Airlock(agent.state).approve(task_id, checker="j.smith")
        result: Result = handle.result(timeout=20)
        after = wait_for(
            lambda: (
                (s := scrape(agent.metrics_port))
                and value(s, "fedtre_agent_reviewed_outputs_total", outcome="released") == 1
                and s
            ),
            what="the reviewed output in the agent's metrics",
        )
        coordinator = scrape(net.coordinator.metrics_port)

    # then the hold is counted as held, never as a failed disclosure check,
    assert value(held, "fedtre_agent_tasks_total", analysis="count", outcome="held") == 1
    checks = "fedtre_agent_disclosure_checks_total"
    assert value(held, checks, rule="review", result="failed") == 0
    assert value(held, checks, rule="review", result="passed") == 0
    # the approval counts as a passed review and a released output,
    assert result.state == "completed" and result.nodes["tre-a"].outcome == "released"
    assert value(after, checks, rule="review", result="passed") == 1
    assert value(after, checks, rule="review", result="failed") == 0
    assert value(after, "fedtre_agent_reviewed_outputs_total", outcome="blocked") == 0
    # and the coordinator counts the node's output as released after a passed review.
    outcomes = "fedtre_task_outcomes_total"
    assert value(coordinator, outcomes, node="tre-a", analysis="count", outcome="released") == 1
    assert value(coordinator, outcomes, node="tre-a", analysis="count", outcome="held") == 0
    coordinator_checks = "fedtre_disclosure_checks_total"
    assert value(coordinator, coordinator_checks, node="tre-a", rule="review", result="failed") == 0
    assert value(coordinator, coordinator_checks, node="tre-a", rule="review", result="passed") == 1


def test_a_task_waiting_for_the_tre_operator_counts_as_awaiting_operator_not_held():
    # Given a node whose TRE's operator approves each project before it runs,
    data = {"tre-a": DATA["tre-a"]}
    governance = {"tre-a": {"operator_approval": "project"}}
    with LocalNetwork(data, metrics=True, governance=governance) as net:
        agent = net.agents["tre-a"]
        handle = net.client().submit("count", dataset="cohort")
        # when its task waits for the operator and the agent is scraped,
        waiting = wait_for(
            lambda: (
                (s := scrape(agent.metrics_port))
                and value(
                    s, "fedtre_agent_tasks_total", analysis="count", outcome="awaiting_operator"
                )
                == 1
                and s
            ),
            what="the waiting task in the agent's metrics",
        )
        assert handle.status().state != "completed"

    # then it is counted as awaiting the operator, not as held for the output checker,
    assert value(waiting, "fedtre_agent_tasks_total", analysis="count", outcome="held") == 0
    # and the wait is no failed disclosure check.
    checks = "fedtre_agent_disclosure_checks_total"
    assert value(waiting, checks, rule="operator_approval", result="failed") == 0
