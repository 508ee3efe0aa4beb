"""Mutual TLS is the only way in, and a certificate's identity decides what its holder may do."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedtre.identity.ca import init_network
from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork
from fedtre.v1 import agent_pb2, agent_pb2_grpc, jobs_pb2, jobs_pb2_grpc

TIMEOUT = 10


@pytest.fixture(scope="module")
def network(parts):
    data = {node: {"cohort": frame} for node, frame in parts.items()}
    with LocalNetwork(
        data,
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
        auto_approve=False,
        ping_interval=0.3,
    ) as net:
        yield net


def channel(net, *identity: str) -> grpc.Channel:
    return grpc.secure_channel(
        net.address, channel_credentials(TlsFiles.from_dir(net.pki.joinpath(*identity)))
    )


def test_health_and_reflection_are_served(network):
    with channel(network, "users", "researcher") as ch:
        response = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_is_refused(network):
    with grpc.insecure_channel(network.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            jobs_pb2_grpc.JobServiceStub(ch).ListNodes(jobs_pb2.ListNodesRequest(), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(network, tmp_path):
    init_network(tmp_path / "other", ["tre-a"])
    # The impostor trusts the real coordinator, but its own certificate is from another CA.
    other = tmp_path / "other" / "nodes" / "tre-a"
    creds = grpc.ssl_channel_credentials(
        root_certificates=(network.pki / "ca" / "ca.pem").read_bytes(),
        private_key=(other / "key.pem").read_bytes(),
        certificate_chain=(other / "cert.pem").read_bytes(),
    )
    with grpc.secure_channel(network.address, creds) as ch:
        stream = agent_pb2_grpc.AgentServiceStub(ch).OpenTaskStream(
            agent_pb2.OpenTaskStreamRequest(), timeout=TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_researcher_certificate_cannot_open_a_task_stream(network):
    with channel(network, "users", "researcher") as ch:
        stream = agent_pb2_grpc.AgentServiceStub(ch).OpenTaskStream(
            agent_pb2.OpenTaskStreamRequest(), timeout=TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_node_certificate_cannot_approve_jobs(network):
    with channel(network, "nodes", "tre-a") as ch:
        with pytest.raises(grpc.RpcError) as err:
            jobs_pb2_grpc.JobServiceStub(ch).ApproveJob(
                jobs_pb2.ApproveJobRequest(job_id=1), timeout=TIMEOUT
            )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_researcher_cannot_approve_jobs(network):
    with network.client("researcher") as client:
        handle = client.submit("count", dataset="cohort")
        from fedtre.errors import PermissionDenied

        with pytest.raises(PermissionDenied):
            client.approve(handle.id)
        assert client.job(handle.id).state == "pending_approval"


def test_a_node_receives_only_its_own_tasks_and_reports_only_its_own_results(parts):
    data = {node: {"cohort": frame} for node, frame in parts.items()}
    with LocalNetwork(data, auto_approve=True, ping_interval=0.3) as net:
        # Given the agents of tre-a and tre-b are down and a job for both is queued,
        net.stop_agent("tre-a")
        net.stop_agent("tre-b")
        with net.client() as researcher:
            handle = researcher.submit("count", dataset="cohort", nodes=["tre-a", "tre-b"])
            tre_b_task = researcher.job(handle.id).tasks["tre-b"].task_id
            # when tre-a's certificate opens a task stream and reads until the first ping,
            with channel(net, "nodes", "tre-a") as ch:
                stub = agent_pb2_grpc.AgentServiceStub(ch)
                stream = stub.OpenTaskStream(agent_pb2.OpenTaskStreamRequest(), timeout=TIMEOUT)
                received = []
                for message in stream:
                    if message.HasField("ping"):
                        break
                    if message.HasField("task"):  # not the audit checkpoint it is sent
                        received.append(message.task.node)
                stream.cancel()
                # then it has received tre-a's task and nothing else,
                assert received == ["tre-a"]
                # and it cannot report a result for tre-b's task,
                with pytest.raises(grpc.RpcError) as err:
                    stub.ReportResult(
                        agent_pb2.ReportResultRequest(task_id=tre_b_task, outcome=1),
                        timeout=TIMEOUT,
                    )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # which stays undelivered.
            assert researcher.job(handle.id).tasks["tre-b"].state == "queued"
