"""Each released output carries its agent's signature, version and declared dataset version."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest
from sectools import OPEN_POLICY, data, start

from fedtre.identity.ca import init_network
from fedtre.identity.provenance import ProvenanceError, sign
from fedtre.identity.provenance import load_private_key as load_key
from fedtre.testing import LocalNetwork
from node_agent.app import Agent
from node_agent.config import load_config, write_config
from node_agent.connection import AGENT_VERSION
from node_agent.sovereignty import GovernanceConfig

VERSION = "extract 2026-03 (v4)"
WAIT = 20


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a", "tre-b"),
            policy=OPEN_POLICY,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("provenance"),
        )
    )
    # tre-a's operator declares the version of its data.
    path = network.directory / "nodes" / "tre-a" / "agent.toml"
    network.stop_agent("tre-a")
    config = load_config(path)
    cohort = replace(config.datasets["cohort"], version=VERSION)
    config = write_config(
        path,
        replace(
            config,
            datasets={"cohort": cohort},
            governance=GovernanceConfig(projects=("default",)),
        ),
    )
    assert load_config(path).datasets["cohort"].version == VERSION
    network.agents["tre-a"] = agent = Agent(config)
    agent.start()
    network.wait_until_online(["tre-a"])
    network.add_project("unserved", nodes=("tre-a",), datasets=("cohort",), analyses=("count",))
    yield network
    network.stop()


@pytest.fixture(scope="module")
def job(net):
    with net.client() as researcher:
        handle = researcher.submit("crosstab", dataset="cohort", params={"rows": "sex"})
        handle.result(WAIT)
        return researcher.job(handle.id)


def ca(net):
    return net.pki / "ca" / "ca.pem"


def test_each_released_output_verifies_with_its_agent_and_dataset_version(net, job):
    assert job.state == "completed"
    a = job.tasks["tre-a"].verify(ca(net))
    b = job.tasks["tre-b"].verify(ca(net))
    assert (a.node, a.job_id, a.analysis, a.dataset) == ("tre-a", job.id, "crosstab", "cohort")
    assert (a.agent_version, a.dataset_version) == (AGENT_VERSION, VERSION)
    assert (b.agent_version, b.dataset_version) == (AGENT_VERSION, "")
    assert a.outcome == "released" and a.task_id == job.tasks["tre-a"].task_id


def test_an_output_altered_at_the_coordinator_fails_verification(net, job):
    task = job.tasks["tre-a"]
    payload = json.loads(json.dumps(task.payload))
    first = next(iter(payload))
    payload[first] = "altered"
    with pytest.raises(ProvenanceError, match="differs from what node 'tre-a' released"):
        replace(task, output=replace(task.output, payload=payload)).verify(ca(net))
    # Also through the coordinator's database: the altered row no longer verifies.
    with sqlite3.connect(net.directory / "coordinator.sqlite") as conn:
        conn.execute(
            "UPDATE tasks SET payload = ? WHERE task_id = ?",
            (json.dumps(payload), task.task_id),
        )
    with net.client() as researcher:
        reread = researcher.job(job.id).tasks["tre-a"]
    with pytest.raises(ProvenanceError, match="differs"):
        reread.verify(ca(net))


def test_the_disclosure_checks_are_signed_with_the_output(net, job):
    # Given a released output whose signed statement covers its rules
    task = job.tasks["tre-a"]
    assert task.verify(ca(net)).rules_signed
    assert task.rules, "a released output shows the rules applied to it"
    # When a rule's verdict or words are altered after release, verification fails
    first = task.rules[0]
    for altered in (
        replace(first, passed=not first.passed),
        replace(first, detail="no rule was applied"),
    ):
        shown = replace(task.output, rules=(altered, *task.rules[1:]))
        with pytest.raises(ProvenanceError, match="disclosure checks shown differ"):
            replace(task, output=shown).verify(ca(net))
    # and so does dropping one
    with pytest.raises(ProvenanceError, match="disclosure checks shown differ"):
        replace(task, output=replace(task.output, rules=task.rules[1:])).verify(ca(net))


def test_provenance_of_another_node_or_another_ca_is_refused(net, job, tmp_path):
    a, b = job.tasks["tre-a"], job.tasks["tre-b"]
    with pytest.raises(ProvenanceError, match="signed by node 'tre-b', not node 'tre-a'"):
        replace(a, provenance=b.provenance).verify(ca(net))
    # A look-alike tre-a from another CA signs tre-a's exact output: not this network's.
    init_network(tmp_path / "rogue", ["tre-a"], users=())
    rogue = tmp_path / "rogue" / "nodes" / "tre-a"
    forged = sign(
        load_key((rogue / "key.pem").read_bytes()), (rogue / "cert.pem").read_bytes(),
        node="tre-a", task_id=a.task_id, job_id=job.id, project="default",
        analysis="crosstab", dataset="cohort", dataset_version=VERSION,
        agent_version=AGENT_VERSION, outcome="released", payload=a.payload, rules=a.rules,
        params=a.params,
    )  # fmt: skip
    with pytest.raises(ProvenanceError, match="not issued by this network's CA"):
        replace(a, provenance=forged).verify(ca(net))
    # A statement whose signature does not match it.
    tampered = replace(a.provenance, statement=a.provenance.statement.replace(b"v4", b"v5"))
    with pytest.raises(ProvenanceError, match="signature does not match"):
        replace(a, provenance=tampered).verify(ca(net))


def test_outputs_that_release_nothing_carry_no_provenance(net):
    # tre-a does not serve project "unserved": it refuses, and releases nothing to sign.
    with net.client() as researcher:
        handle = researcher.submit("count", dataset="cohort", project="unserved")
        handle.result(WAIT)
        task = researcher.job(handle.id).tasks["tre-a"]
    assert task.outcome == "refused" and task.provenance is None
    with pytest.raises(ProvenanceError, match="carries no signed provenance"):
        task.verify(ca(net))
