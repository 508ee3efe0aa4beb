"""`fedtre status` and `fedtre jobs list` filters, against a real network."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from ops_testkit import DATA, wait_for

from fedtre.cli.main import main
from fedtre.testing import LocalNetwork


def fedtre(net: LocalNetwork, *args: str, user: str = "admin") -> list[str]:
    return [*args, "--coordinator", net.address, "--identity", str(net.pki / "users" / user)]


@pytest.fixture(scope="module")
def network():
    """tre-c offline with one task queued; tre-b's data gone, so its task failed.

    Jobs: 1 alpha/count (all nodes, running: tre-c has not answered), 2 beta/count on
    tre-a and tre-b (finished), 3 beta/count on tre-a (pending approval), 4 alpha/count on
    tre-a (rejected).
    """
    with LocalNetwork(DATA, auto_approve=False) as net:
        researcher, admin = net.client(), net.client("admin")
        net.add_project("alpha")
        net.add_project("beta")
        net.stop_agent("tre-c")
        path = net.directory / "nodes" / "tre-b" / "cohort.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE cohort"))
        engine.dispose()
        ids = {
            "running": researcher.submit("count", dataset="cohort", project="alpha").id,
            "finished": researcher.submit(
                "count", dataset="cohort", project="beta", nodes=["tre-a", "tre-b"]
            ).id,
            "pending": researcher.submit(
                "count", dataset="cohort", project="beta", nodes=["tre-a"]
            ).id,
            "rejected": researcher.submit(
                "count", dataset="cohort", project="alpha", nodes=["tre-a"]
            ).id,
        }
        admin.approve(ids["running"])
        admin.approve(ids["finished"])
        admin.reject(ids["rejected"], "duplicate")
        admin.handle(ids["finished"]).wait(timeout=20)
        wait_for(
            lambda: admin.job(ids["running"]).done_count == 2, what="tre-a and tre-b to answer"
        )
        net.ids = ids
        yield net


def _listed(net, capsys, *filters: str) -> set[int]:
    assert main(fedtre(net, "jobs", "list", "--json", *filters, user="researcher")) == 0
    return {job["id"] for job in json.loads(capsys.readouterr().out)}


def test_jobs_list_filters_by_state_project_and_node(network, capsys):
    ids = network.ids

    assert _listed(network, capsys) == set(ids.values())
    assert _listed(network, capsys, "--state", "running") == {ids["running"]}
    assert _listed(network, capsys, "--project", "beta") == {ids["finished"], ids["pending"]}
    assert _listed(network, capsys, "--node", "tre-c") == {ids["running"]}
    assert _listed(network, capsys, "--node", "tre-b") == {ids["running"], ids["finished"]}
    assert _listed(network, capsys, "--project", "alpha", "--node", "tre-a") == {
        ids["running"],
        ids["rejected"],
    }
    assert _listed(network, capsys, "--project", "gamma") == set()
    # A node id is matched whole: no prefix and no LIKE wildcard matches.
    assert _listed(network, capsys, "--node", "tre-") == set()
    assert _listed(network, capsys, "--node", "tre_a") == set()


def test_jobs_list_table_shows_the_project(network, capsys):
    assert main(fedtre(network, "jobs", "list", "--project", "beta", user="researcher")) == 0
    out = capsys.readouterr().out

    assert "PROJECT" in out.splitlines()[0]
    assert out.count("beta") == 2


def test_status_shows_nodes_queues_jobs_and_failures(network, capsys):
    assert main(fedtre(network, "status")) == 0
    out = capsys.readouterr().out

    assert "nodes: 2 online, 1 offline" in out
    tre_c = next(line for line in out.splitlines() if line.startswith("tre-c"))
    assert tre_c.split()[1:2] == ["OFFLINE"]
    assert (
        "jobs: pending approval 1, running 1, completed 0, partial 1, failed 0, rejected 1" in out
    )
    failures = out.split("recent failures:")[1].strip().splitlines()[1:]
    assert sorted(line.split()[:4] for line in failures) == sorted(
        [str(network.ids[job]), "tre-b", "count", "failed"] for job in ("running", "finished")
    )


def test_status_json_has_the_queues_and_counts(network, capsys):
    assert main(fedtre(network, "status", "--json")) == 0
    status = json.loads(capsys.readouterr().out)

    nodes = {n["node_id"]: n for n in status["nodes"]}
    assert {n: (v["online"], v["queued"], v["delivered"]) for n, v in nodes.items()} == {
        "tre-a": (True, 0, 0),
        "tre-b": (True, 0, 0),
        "tre-c": (False, 1, 0),
    }
    assert nodes["tre-c"]["oldest_queued_at"] is not None
    assert nodes["tre-a"]["oldest_queued_at"] is None
    assert status["jobs"] == {
        "pending_approval": 1,
        "rejected": 1,
        "running": 1,
        "completed": 0,
        "partial": 1,
        "failed": 0,
        "cancelled": 0,
    }
    failures = status["recent_failures"]
    assert {(f["job_id"], f["node"], f["outcome"]) for f in failures} == {
        (network.ids["running"], "tre-b", "failed"),
        (network.ids["finished"], "tre-b", "failed"),
    }
    assert all(f["error"] for f in failures)


def test_status_is_for_admins_only(network, capsys):
    assert main(fedtre(network, "status", user="researcher")) == 2
    assert "admin" in capsys.readouterr().err
