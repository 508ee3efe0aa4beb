"""Tasks and nodes: signed approvals hold against a tampered database, replays, and impostors."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sectools import (
    OPEN_POLICY,
    RECORDS,
    TIMEOUT,
    agent_events,
    agent_tasks,
    cli,
    data,
    events,
    head,
    start,
    wait_for,
)

from fedtre.identity.ca import init_network
from fedtre.identity.signing import SIGNING_KEY_FILE, Signer, TaskGrant, load_signing_key
from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork
from fedtre.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from fedtre.wire import schema_to_pb
from node_agent.task import TaskSpec

WAIT = 20


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a", "tre-b", "tre-c", "tre-d"),
            policy=OPEN_POLICY,
            auto_approve=False,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("tasks"),
        )
    )
    yield network
    network.stop()


def database(net: LocalNetwork) -> Path:
    return net.directory / "coordinator.sqlite"


def submit_and_approve(net: LocalNetwork, nodes: list[str], params: dict | None = None) -> int:
    with net.client("researcher") as researcher:
        handle = researcher.submit("count", dataset="cohort", nodes=nodes, params=params or {})
    with net.client("approver") as approver:
        approver.approve(handle.id)
    return handle.id


def task_of(net: LocalNetwork, job_id: int, node: str) -> str:
    return next(t.task_id for t in net.coordinator.store.get_job(job_id).tasks if t.node == node)


def wait_reported(net: LocalNetwork, job_id: int, node: str) -> None:
    def reported() -> bool:
        tasks = net.coordinator.store.get_job(job_id).tasks
        return next(t for t in tasks if t.node == node).output is not None

    wait_for(reported, what=f"{node}'s report")


def node_channel(net: LocalNetwork, node: str) -> grpc.Channel:
    creds = channel_credentials(TlsFiles.from_dir(net.pki / "nodes" / node))
    return grpc.secure_channel(net.address, creds)


# -- a tampered coordinator database --------------------------------------------------------


def test_a_job_row_altered_after_approval_is_run_by_no_agent(net):
    # Given an approved job whose tre-b task is still queued (tre-b's agent is down),
    net.stop_agent("tre-b")
    job_id = submit_and_approve(net, ["tre-a", "tre-b"])
    task_b = task_of(net, job_id, "tre-b")
    wait_reported(net, job_id, "tre-a")
    # when someone with the database changes the job's parameters,
    altered = {"filter": {"column": "age", "op": ">", "value": 80}}
    with sqlite3.connect(database(net)) as conn:
        conn.execute("UPDATE jobs SET params = ? WHERE id = ?", (json.dumps(altered), job_id))
    before = head(net)
    net.start_agent("tre-b", net.data["tre-b"])
    # then tre-b refuses the task and says why; nothing ran there,
    with net.client("researcher") as researcher:
        result = researcher.handle(job_id).result(WAIT)
    assert result.nodes["tre-b"].outcome == "refused"
    assert "differ from what was approved" in result.nodes["tre-b"].error
    assert task_b not in agent_tasks(net, "tre-b")
    assert not agent_events(net, "tre-b", "task.received")
    refused = agent_events(net, "tre-b", "task.refused")
    assert [e.subject for e in refused] == [f"task:{task_b}"]
    # and the coordinator's audit log has the refusal as tre-b reported it.
    reported = [e for e in events(net, before, "task.reported") if e.subject == f"task:{task_b}"]
    assert [(e.actor, e.details["outcome"]) for e in reported] == [("tre-b", "refused")]


def test_a_signed_approval_record_altered_in_the_database_is_not_dispatched(net):
    net.stop_agent("tre-b")
    try:
        job_id = submit_and_approve(net, ["tre-a", "tre-b"])
        task_b = task_of(net, job_id, "tre-b")
        wait_reported(net, job_id, "tre-a")
        # Widen the approved record itself: its signature no longer verifies.
        with sqlite3.connect(database(net)) as conn:
            (grant,) = conn.execute(
                "SELECT grant FROM job_grants WHERE job_id = ?", (job_id,)
            ).fetchone()
            forged = bytes(grant).replace(b'"analysis":"count"', b'"analysis":"crosstab"')
            assert forged != bytes(grant)
            conn.execute("UPDATE job_grants SET grant = ? WHERE job_id = ?", (forged, job_id))
        before = head(net)
    finally:
        net.start_agent("tre-b", net.data["tre-b"])
    with net.client("researcher") as researcher:
        result = researcher.handle(job_id).result(WAIT)
    assert result.nodes["tre-b"].outcome == "refused"
    assert "does not verify" in result.nodes["tre-b"].error
    withheld = events(net, before, "task.withheld")
    assert [e.subject for e in withheld] == [f"task:{task_b}"]
    assert task_b not in agent_tasks(net, "tre-b")


# -- replays ------------------------------------------------------------------------------


def signed_task(
    net: LocalNetwork,
    node: str,
    expires_at: datetime,
    task_id: str,
    job_id: int = 90_001,
    starts_at: datetime | None = None,
) -> TaskSpec:
    """A task signed with the network's real key (as a captured, genuine task would be)."""
    signer = Signer(load_signing_key(net.pki / "coordinator" / SIGNING_KEY_FILE))
    grant, signature = signer.sign(
        TaskGrant(
            task_id=task_id, job_id=job_id, node=node, project="default", analysis="count",
            dataset="cohort", params={}, expires_at=expires_at, approved_by=("approver",),
            approved_at=expires_at - timedelta(days=1), starts_at=starts_at,
        )
    )  # fmt: skip
    return TaskSpec(
        task_id=task_id, job_id=job_id, node=node, analysis="count", dataset="cohort", params={},
        project="default", grant=grant, signature=signature,
    )  # fmt: skip


def test_a_task_replayed_after_its_approval_expired_is_refused(net):
    agent = net.agents["tre-a"]
    released = agent.state.released_count()
    replay = signed_task(net, "tre-a", datetime.now(UTC) - timedelta(minutes=1), "replayed-1")
    # The agent's own run function, exactly as its task stream calls it.
    output = agent.gate.run(replay)
    assert output.outcome.value == "refused"
    assert "expired" in output.error
    assert "replayed-1" not in agent_tasks(net, "tre-a")
    assert agent.state.released_count() == released
    refused = agent_events(net, "tre-a", "task.refused")
    assert [e.details["reason"] for e in refused if e.subject == "task:replayed-1"] == [
        output.error
    ]
    # The same task before its expiry is accepted: the refusal above was the expiry's.
    fresh = signed_task(net, "tre-a", datetime.now(UTC) + timedelta(minutes=5), "replayed-2")
    assert agent.gate.run(fresh).outcome.value == "released"


def test_a_task_of_a_project_that_has_not_started_is_refused_by_the_agent(net):
    # Given a genuinely signed task whose grant says the project starts tomorrow
    agent = net.agents["tre-a"]
    released = agent.state.released_count()
    now = datetime.now(UTC)
    early = signed_task(
        net, "tre-a", now + timedelta(days=30), "early-1", 90_002, now + timedelta(days=1)
    )

    # When the agent is handed it, it refuses it, saying when the project starts
    output = agent.gate.run(early)

    assert output.outcome.value == "refused"
    assert "has not started" in output.error and "starts at" in output.error
    assert "early-1" not in agent_tasks(net, "tre-a")
    assert agent.state.released_count() == released
    # The same task once its start has passed is run: the refusal was the start's.
    started = signed_task(
        net, "tre-a", now + timedelta(days=30), "early-2", 90_002, now - timedelta(minutes=1)
    )
    later = agent.gate.run(started)
    assert later.outcome.value == "released", later.error


def test_a_task_for_another_node_is_refused_by_the_agent(net):
    agent = net.agents["tre-a"]
    stolen = signed_task(net, "tre-b", datetime.now(UTC) + timedelta(minutes=5), "stolen-1")
    output = agent.gate.run(stolen)
    assert output.outcome.value == "refused" and "not this node" in output.error
    assert "stolen-1" not in agent_tasks(net, "tre-a")


def test_a_task_delivered_again_is_not_run_again(net):
    job_id = submit_and_approve(net, ["tre-a"])
    with net.client("researcher") as researcher:
        first = researcher.handle(job_id).result(WAIT)
    task_a = task_of(net, job_id, "tre-a")
    # The coordinator's database is made to deliver the task a second time.
    with sqlite3.connect(database(net)) as conn:
        conn.execute("UPDATE tasks SET state = 'queued' WHERE task_id = ?", (task_a,))
    net.coordinator.service.on_tasks_queued(["tre-a"])
    # Once the agent has answered the redelivery, the task is done again,
    wait_for(
        lambda: net.coordinator.store.get_job(job_id).tasks[0].state.value == "done",
        what="the redelivery's report",
    )
    # and the agent released its output once only: it sent the stored one again.
    assert any("task redelivered" in line and task_a in line for line in RECORDS)
    released = [
        e for e in agent_events(net, "tre-a", "output.released") if e.subject == f"task:{task_a}"
    ]
    assert len(released) == 1
    assert first.nodes["tre-a"].outcome == "released"


# -- node identities ----------------------------------------------------------------------


def test_node_a_gets_only_its_own_tasks_and_cannot_report_node_bs(net):
    # Given a job for tre-a and tre-b while both agents are down,
    net.stop_agent("tre-a")
    net.stop_agent("tre-b")
    try:
        job_id = submit_and_approve(net, ["tre-a", "tre-b"])
        task_a, task_b = task_of(net, job_id, "tre-a"), task_of(net, job_id, "tre-b")
        before = head(net)
        with node_channel(net, "tre-a") as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            # when tre-a's certificate opens a task stream (it names no node: the
            # certificate does) and reads until the first ping,
            stream = stub.OpenTaskStream(agent_pb2.OpenTaskStreamRequest(), timeout=TIMEOUT)
            received = []
            for message in stream:
                if message.HasField("ping"):
                    break
                if message.HasField("task"):  # not the audit checkpoint it is sent
                    received.append(message.task.task_id)
            stream.cancel()
            # then it got tre-a's task only,
            assert received == [task_a]
            # and reporting tre-b's task is PERMISSION_DENIED and audited,
            with pytest.raises(grpc.RpcError) as err:
                stub.ReportResult(
                    agent_pb2.ReportResultRequest(
                        task_id=task_b, outcome=common_pb2.OUTCOME_RELEASED
                    ),
                    timeout=TIMEOUT,
                )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        denied = events(net, before, "access.denied")
        assert [(e.actor, e.subject) for e in denied] == [("tre-a", f"task:{task_b}")]
        # and tre-b's task is still queued for tre-b, with no result recorded.
        task = next(t for t in net.coordinator.store.get_job(job_id).tasks if t.node == "tre-b")
        assert task.state.value == "queued" and task.output is None
    finally:
        net.start_agent("tre-a", net.data["tre-a"])
        net.start_agent("tre-b", net.data["tre-b"])
    with net.client("researcher") as researcher:
        assert researcher.handle(job_id).result(WAIT).state == "completed"


def test_a_node_certificate_from_another_ca_is_refused_before_any_call(net, tmp_path):
    init_network(tmp_path / "rogue", ["tre-a"], users=())
    rogue = tmp_path / "rogue" / "nodes" / "tre-a"
    creds = grpc.ssl_channel_credentials(
        root_certificates=(net.pki / "ca" / "ca.pem").read_bytes(),
        private_key=(rogue / "key.pem").read_bytes(),
        certificate_chain=(rogue / "cert.pem").read_bytes(),
    )
    before = head(net)
    with grpc.secure_channel(net.address, creds) as channel:
        stream = agent_pb2_grpc.AgentServiceStub(channel).OpenTaskStream(
            agent_pb2.OpenTaskStreamRequest(), timeout=TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
    # The TLS handshake fails: no call reaches the coordinator, so there is nothing it
    # could audit (and nothing it did).
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert events(net, before, "node.connected") == [] == events(net, before, "auth.failed")


def test_a_revoked_certificate_is_refused_and_its_open_stream_closed_at_once(net, capsys):
    # Given tre-c's certificate holding an open task stream (as its agent would),
    config = net.agents["tre-c"].config
    hello = agent_pb2.OpenTaskStreamRequest(
        datasets=[schema_to_pb(d.schema) for d in config.datasets.values()],
        analyses=list(config.analyses),
    )
    net.stop_agent("tre-c")
    with node_channel(net, "tre-c") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stream = stub.OpenTaskStream(hello, timeout=30)
        stream.initial_metadata()
        before = head(net)
        # when the CA admin revokes it,
        code, out, _ = cli(capsys, "ca", "revoke", str(net.pki), "tre-c")
        assert code == 0 and "Revoked node tre-c" in out
        revoked_at = time.monotonic()
        # then the coordinator ends that stream within moments, UNAUTHENTICATED,
        with pytest.raises(grpc.RpcError) as err:
            for _ in stream:
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - revoked_at < 3.0
        closed = events(net, before, "node.stream_closed")
        assert [(e.actor, e.details["reason"]) for e in closed] == [
            ("tre-c", "certificate revoked")
        ]
        # refuses every new call with it,
        before = head(net)
        with pytest.raises(grpc.RpcError) as again:
            next(stub.OpenTaskStream(hello, timeout=TIMEOUT))
        assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED
        failed = events(net, before, "auth.failed")
        assert [(e.actor, e.details["reason"]) for e in failed] == [
            ("tre-c", "certificate revoked")
        ]
    # and sends it no task: a job for tre-c stays queued.
    job_id = submit_and_approve(net, ["tre-c"])
    task = net.coordinator.store.get_job(job_id).tasks[0]
    assert task.state.value == "queued"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_certificate_is_rotated_without_restarting_the_agent(net, capsys):
    agent = net.agents["tre-d"]
    others = {n: digest(net.pki / "nodes" / n) for n in ("tre-a", "tre-b", "tre-c")}
    old = (net.pki / "nodes" / "tre-d" / "cert.pem").read_bytes()
    # When tre-d's certificate is renewed and the old one revoked,
    code, out, _ = cli(capsys, "ca", "renew", str(net.pki), "tre-d", "--revoke-old")
    assert code == 0, out
    assert (net.pki / "nodes" / "tre-d" / "cert.pem").read_bytes() != old
    # and a job for it is queued meanwhile,
    job_id = submit_and_approve(net, ["tre-d"])
    # then the same running agent reconnects with the new pair and runs it,
    with net.client("researcher") as researcher:
        result = researcher.handle(job_id).result(WAIT)
    assert result.nodes["tre-d"].outcome == "released"
    assert net.agents["tre-d"] is agent and agent.live()
    # and no other node's files changed.
    assert {n: digest(net.pki / "nodes" / n) for n in others} == others


def test_a_second_task_of_one_job_made_up_in_the_database_is_refused(net):
    # Given a job tre-a has run,
    job_id = submit_and_approve(net, ["tre-a"])
    with net.client("researcher") as researcher:
        assert researcher.handle(job_id).result(WAIT).nodes["tre-a"].outcome == "released"
    task_a = task_of(net, job_id, "tre-a")
    # when a copy of its task is queued in the coordinator's database (the coordinator
    # signs it: the job's approval covers tre-a),
    with sqlite3.connect(database(net)) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM tasks WHERE task_id = ?", (task_a,)).fetchone())
        row.update(
            task_id="copy-of-" + task_a[:8], state="queued", delivered_at=None,
            reported_at=None, outcome=None, payload=None, rules=None, error="",
        )  # fmt: skip
        columns = ", ".join(row)
        marks = ", ".join("?" * len(row))
        conn.execute(f"INSERT INTO tasks ({columns}) VALUES ({marks})", tuple(row.values()))
    net.coordinator.service.on_tasks_queued(["tre-a"])
    copy = row["task_id"]
    # then tre-a refuses it, runs nothing a second time, and reports the refusal.
    wait_for(lambda: any(e.subject == f"task:{copy}" for e in agent_events(net, "tre-a",
             "task.refused")), what="the refusal")  # fmt: skip
    (refusal,) = [
        e for e in agent_events(net, "tre-a", "task.refused") if e.subject == f"task:{copy}"
    ]
    assert f"already ran job {job_id}" in refusal.details["reason"]
    assert copy not in agent_tasks(net, "tre-a")
    released = {e.subject for e in agent_events(net, "tre-a", "output.released")}
    assert f"task:{copy}" not in released and f"task:{task_a}" in released
