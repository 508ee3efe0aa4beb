"""Safe outputs end to end over mutual TLS: suppression, blocking, and the airlock round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedtre.cli.main import main
from fedtre.disclosure import release
from fedtre.testing import LocalNetwork, eventually
from node_agent.state import AgentState


def cohort(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(20, 80, n),
            "sex": rng.choice(["F", "M"], n),
            "region": rng.choice(["north", "south", "east"], n, p=[0.45, 0.45, 0.10]),
            "sbp": rng.normal(130, 15, n).round(1),
        }
    )
    # exactly 3 people in a rare region, all women: a small cell in region x sex
    frame.loc[[0, 1, 2], ["region", "sex"]] = ["west", "F"]
    return frame


@pytest.fixture(scope="module")
def network():
    data = {"tre-a": {"cohort": cohort(300, 1)}, "tre-b": {"cohort": cohort(200, 2)}}
    with LocalNetwork(data, policy={"hold_for_review": ["summary"]}) as net:
        yield net, data


def config_of(net: LocalNetwork, node: str) -> str:
    return str(net.directory / "nodes" / node / "agent.toml")


def test_suppression_is_visible_in_each_nodes_rules_and_table(network) -> None:
    net, data = network
    with net.client() as client:
        result = client.submit(
            "crosstab", dataset="cohort", params={"rows": "region", "columns": "sex"}
        ).result(timeout=60)

    node = result.nodes["tre-a"]
    assert node.outcome == "suppressed"
    rules = {r.rule: r for r in node.rules}
    assert not rules["threshold"].passed
    assert not rules["secondary_suppression"].passed  # a lone small cell takes others with it
    assert rules["perturbation"].passed and rules["differencing"].passed
    table = node.table
    # west's every figure is withheld, so even its label stays in the TRE, and nothing
    # says how many levels were left out
    assert "west" not in table.index and "west" not in repr(node.payload)
    assert "hidden" not in node.payload
    # secondary suppression withheld more: whole rows left out, or cells left in sight
    regions = set(data["tre-a"]["cohort"]["region"])
    assert len(regions - set(table.index)) + int(table.isna().sum().sum()) >= 2
    released = table.stack().dropna()
    assert (released >= 10).all()  # perturbed, never below the threshold
    # the combined table never shows a cell that some node withheld
    combined = result.to_frame()
    assert "west" not in combined.index
    for (r, c), withheld in table.isna().stack().items():
        if withheld:
            assert pd.isna(combined.loc[r, c])
    assert result.state == "partial"


def test_a_blocked_output_leaves_nothing(network) -> None:
    net, _ = network
    rare = {"col": "region", "op": "==", "value": "west"}
    with net.client() as client:
        result = client.submit("count", dataset="cohort", params={"filter": rare}).result(
            timeout=60
        )

    node = result.nodes["tre-a"]
    assert node.outcome == "blocked"
    assert node.payload == {}
    assert node.table is None
    failed = [r for r in node.rules if not r.passed]
    assert failed and failed[0].rule == "cohort_size"
    assert failed[0].detail == release.PLAIN_WORDS["cohort_size"]  # fixed words only
    assert "3" not in json.dumps(node.payload) + "".join(r.detail for r in node.rules)
    assert result.state == "failed"  # each node holds only 3 such people: none released
    assert result.combined.get("n") is None


def held_job(net: LocalNetwork) -> int:
    with net.client() as client:
        handle = client.submit("summary", dataset="cohort", params={"column": "sbp", "by": "sex"})

        def both_held() -> bool:
            return all(t.state == "held" for t in handle.status().tasks.values())

        eventually(both_held, timeout=30.0)
        status = handle.status()
    assert status.state == "running" and status.held_count == 2
    for part in status.tasks.values():
        assert part.outcome == "held" and part.payload == {}
        assert any(r.rule == "review" and not r.passed for r in part.rules)
    return handle.id


def test_held_outputs_wait_for_the_checker_then_approve_and_deny(
    network, capsys: pytest.CaptureFixture[str]
) -> None:
    net, data = network
    job_id = held_job(net)
    with net.client() as client:
        tasks = {n: t.task_id for n, t in client.job(job_id).tasks.items()}

    # The checker at tre-a sees exactly what would leave and approves it
    assert (
        main(["agent", "inbox", "show", tasks["tre-a"], "--config", config_of(net, "tre-a")]) == 0
    )
    shown = capsys.readouterr().out
    assert "summary on dataset 'cohort'" in shown and "would leave the TRE" in shown
    code = main(
        [
            "agent",
            "inbox",
            "approve",
            tasks["tre-a"],
            "--checker",
            "jo",
            "--config",
            config_of(net, "tre-a"),
        ]
    )
    assert code == 0
    # ... and the checker at tre-b denies, with a reason for the researcher
    code = main(
        [
            "agent",
            "inbox",
            "deny",
            tasks["tre-b"],
            "--checker",
            "sam",
            "--reason",
            "project not cleared for this variable",
            "--config",
            config_of(net, "tre-b"),
        ]
    )
    assert code == 0

    with net.client() as client:
        result = client.handle(job_id).result(timeout=30)

    assert result.state == "partial"
    approved = result.nodes["tre-a"]
    assert approved.outcome == "released" and approved.state == "done"
    assert any(r.rule == "review" and r.passed and "jo" in r.detail for r in approved.rules)
    groups = {g: n for g, n, _, _ in approved.payload["groups"]}
    truth = data["tre-a"]["cohort"].groupby("sex").size().to_dict()
    assert groups.keys() == truth.keys()
    assert all(abs(groups[g] - n) <= 3 for g, n in truth.items())  # n perturbed, |noise| <= 3
    denied = result.nodes["tre-b"]
    assert denied.outcome == "blocked" and denied.payload == {}
    assert "project not cleared" in denied.error
    assert any(r.rule == "review" and not r.passed and "sam" in r.detail for r in denied.rules)
    # the combined result withholds what tre-b did not release
    assert all(n is None for _, n, _, _ in result.combined["groups"])


def test_the_coordinator_receives_an_approved_output_exactly_once(network) -> None:
    net, _ = network
    job_id = held_job(net)
    with net.client() as client:
        tasks = {n: t.task_id for n, t in client.job(job_id).tasks.items()}
    for node, task_id in tasks.items():
        assert (
            main(
                [
                    "agent",
                    "inbox",
                    "approve",
                    task_id,
                    "--checker",
                    "jo",
                    "--config",
                    config_of(net, node),
                ]
            )
            == 0
        )

    with net.client() as client:
        result = client.handle(job_id).result(timeout=30)
        first = client.job(job_id)

    assert result.state == "completed"
    # every node logged one release for the task and marked the decision reported
    for node, task_id in tasks.items():
        state: AgentState = net.agents[node].state
        review = state.review(task_id)
        assert review.reported_at is not None
        assert state.decided_unreported() == []
    # reports sent again (a restart before marking) change nothing at the coordinator
    for node, task_id in tasks.items():
        output = net.agents[node].state.stored_result(task_id)
        assert net.agents[node].connection.report(task_id, output)
    with net.client() as client:
        again = client.job(job_id)
    assert again.state == "completed" and again.updated_at == first.updated_at
    assert again.combined == first.combined
