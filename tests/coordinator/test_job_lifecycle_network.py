"""A job's lifecycle over a real network (in-process): idempotent submission, cancellation
that stops delivery, and a maintenance pause the researcher sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from fedtre.errors import Conflict, PermissionDenied
from fedtre.testing import LocalNetwork, eventually

FRAME = pd.DataFrame({"age": list(range(20, 80)) * 2, "sex": ["F", "M"] * 60})
WAIT_S = 20.0


@pytest.fixture(scope="module")
def network() -> Iterator[LocalNetwork]:
    with LocalNetwork(
        {"tre-a": {"cohort": FRAME}, "tre-b": {"cohort": FRAME}},
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
        ping_interval=1.0,
    ) as net:
        yield net


def released(net: LocalNetwork, node: str) -> int:
    return int(net.agents[node].state.released_count())


def received(net: LocalNetwork, node: str, task_id: str) -> bool:
    with net.agents[node].state.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).first()
    return row is not None


def test_a_retried_submission_with_the_same_request_id_makes_one_job(network):
    with network.client() as client:
        first = client.submit("count", dataset="cohort", request_id="req-1")
        again = client.submit("count", dataset="cohort", request_id="req-1")
        other = client.submit("count", dataset="cohort", request_id="req-2")
        assert first.id == again.id != other.id
        assert first.result(timeout=WAIT_S).state == "completed"
        assert [j.id for j in client.jobs(limit=100) if j.id == first.id] == [first.id]


def test_a_paused_node_is_shown_paused_and_a_waiting_job_runs_when_it_resumes(network):
    agent = network.agents["tre-b"]
    with network.client() as client, network.client("admin") as admin:
        agent.state.pause("operator", "patch night")
        try:
            eventually(lambda: {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "paused")
            before = released(network, "tre-b")
            handle = client.submit("count", dataset="cohort", on_pause="wait")
            eventually(lambda: handle.status().tasks["tre-a"].state == "done")
            # tre-b took nothing while paused, and its deadline does not run
            network.coordinator.service.expire_overdue()
            status = handle.status()
            assert status.state == "running" and status.tasks["tre-b"].state == "queued"
            assert released(network, "tre-b") == before
        finally:
            agent.state.resume("operator")
        result = handle.result(timeout=WAIT_S)
        assert result.state == "completed"
        assert {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "online"


def test_a_job_that_chose_partial_finishes_without_a_paused_node(network):
    agent = network.agents["tre-b"]
    with network.client() as client, network.client("admin") as admin:
        agent.state.pause("operator", "data refresh")
        try:
            eventually(lambda: {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "paused")
            handle = client.submit("count", dataset="cohort", on_pause="partial")
            eventually(lambda: handle.status().tasks["tre-a"].state == "done")
            network.coordinator.service.expire_overdue()
            status = handle.status()
            assert status.state == "partial"
            assert "paused for maintenance" in status.tasks["tre-b"].error
            assert status.reason and "tre-b" in status.reason
            task_b = status.tasks["tre-b"].task_id
        finally:
            agent.state.resume("operator")
        eventually(lambda: {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "online")
        # after the pause the given-up task is never delivered
        probe = client.submit("count", dataset="cohort").result(timeout=WAIT_S)
        assert probe.state == "completed"
        assert not received(network, "tre-b", task_b)


def test_cancelling_a_job_stops_its_delivery_and_nothing_is_released_for_it(network):
    agent = network.agents["tre-b"]
    with network.client() as client, network.client("admin") as admin:
        agent.state.pause("operator", "holding tre-b")
        try:
            eventually(lambda: {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "paused")
            handle = client.submit("count", dataset="cohort")
            eventually(lambda: handle.status().tasks["tre-a"].state == "done")
            before = released(network, "tre-b")

            cancelled = client.cancel(handle.id, "wrong cohort")

            assert cancelled.state == "cancelled"
            assert "wrong cohort" in cancelled.reason
            with pytest.raises(Conflict):
                client.cancel(handle.id)
        finally:
            agent.state.resume("operator")
        eventually(lambda: {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "online")
        assert client.submit("count", dataset="cohort").result(timeout=WAIT_S).state == "completed"
        task_b = handle.status().tasks["tre-b"]
        assert handle.status().state == "cancelled"
        assert not received(network, "tre-b", task_b.task_id)
        assert released(network, "tre-b") == before + 1  # only the probe job's output


def test_only_the_submitter_approvers_and_admins_may_cancel(network):
    network.add_user("mallory", "researcher", projects=("default",))
    with network.client() as client, network.client("mallory") as mallory:
        job = client.submit("count", dataset="cohort")
        with pytest.raises(PermissionDenied):
            mallory.cancel(job.id)
        job.result(timeout=WAIT_S)


def test_an_oversized_message_is_refused_with_resource_exhausted(network):
    import grpc

    from fedtre.credentials import person_credentials
    from fedtre.identity.tls import MAX_MESSAGE_BYTES
    from fedtre.v1 import jobs_pb2, jobs_pb2_grpc

    credentials = person_credentials(
        token=network.tokens["researcher"], ca=network.pki / "ca" / "ca.pem"
    )
    options = [("grpc.max_send_message_length", 2 * MAX_MESSAGE_BYTES)]
    with grpc.secure_channel(network.api_address, credentials, options=options) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        spec = jobs_pb2.JobSpec(analysis="count", dataset="x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitJob(jobs_pb2.SubmitJobRequest(spec=spec), timeout=WAIT_S)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with network.client() as client:
        assert all(j.dataset == "cohort" for j in client.jobs(limit=1000))


def test_the_cli_shows_paused_nodes_and_cancels_jobs(network, capsys):
    from fedtre.cli.main import main

    def fedtre(*args: str) -> list[str]:
        identity = str(network.pki / "users" / "researcher")
        return [*args, "--coordinator", network.address, "--identity", identity]

    agent = network.agents["tre-b"]
    with network.client("admin") as admin:
        agent.state.pause("operator", "cli test")
        try:
            eventually(lambda: {n.node_id: n.status for n in admin.nodes()}["tre-b"] == "paused")
            assert main(fedtre("nodes")) == 0
            rows = {
                line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
            }
            assert rows["tre-a"] == "online" and rows["tre-b"] == "paused"

            args = ("submit", "count", "--dataset", "cohort", "--no-wait", "--deadline", "600")
            assert main(fedtre(*args)) == 0
            job_id = int(capsys.readouterr().out.split()[1])
            assert main(fedtre("jobs", "cancel", str(job_id), "--reason", "typo")) == 0
            assert f"job {job_id} cancelled" in capsys.readouterr().out
        finally:
            agent.state.resume("operator")
    with network.client() as client:
        job = client.job(job_id)
    assert job.state == "cancelled" and "typo" in job.reason


@pytest.mark.parametrize("approval_recorded", [False, True], ids=["before", "during"])
def test_a_job_a_crash_left_pending_is_auto_approved_on_restart_and_runs(
    network, approval_recorded
):
    from datetime import UTC, datetime

    from coordinator.domain.governance import AUTO_APPROVER
    from coordinator.domain.model import JobSpec

    # Given a job created, and perhaps auto-approved, just before the coordinator died
    store = network.coordinator.store
    now = datetime.now(UTC)
    spec = JobSpec("count", "cohort", {}, ("tre-a", "tre-b"), "default")
    job = store.create_job(spec, "researcher", now, request_id=f"crash-{approval_recorded}")
    if approval_recorded:
        store.governance.add_approval(job.id, AUTO_APPROVER, now)

    # When the coordinator resumes what it finds (as it does at start)
    assert network.coordinator.service.resume_pending() == 1
    assert network.coordinator.service.resume_pending() == 0

    # Then the job runs to the end, once
    with network.client() as client:
        result = client.handle(job.id).result(timeout=WAIT_S)
        assert result.state == "completed"
        retried = client.submit("count", dataset="cohort", request_id=f"crash-{approval_recorded}")
        assert retried.id == job.id
