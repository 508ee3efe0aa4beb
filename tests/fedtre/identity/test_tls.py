"""Mutual TLS against a real gRPC server: who gets in, who is refused, and who they are."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedtre.errors import InvalidRequest
from fedtre.identity.ca import NetworkPaths
from fedtre.identity.peer import Identity, identity_from_auth_context
from fedtre.identity.tls import (
    DEFAULT_CHANNEL_OPTIONS,
    DEFAULT_SERVER_OPTIONS,
    TlsFiles,
    channel_credentials,
    server_credentials,
)

TIMEOUT = 5.0
WHOAMI = "/fedtre.test.Probe/WhoAmI"


@dataclass
class Coordinator:
    port: int
    seen: list[Identity] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def coordinator(network: NetworkPaths) -> Iterator[Coordinator]:
    """A real server on port 0 with the coordinator's credentials and the health service."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=DEFAULT_SERVER_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(TlsFiles.from_dir(network.coordinator))
    )
    running = Coordinator(port)

    def who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = identity_from_auth_context(context.auth_context())
        running.seen.append(identity)
        return f"{identity.name}/{identity.role}".encode()

    handler = grpc.unary_unary_rpc_method_handler(who_am_i)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("fedtre.test.Probe", {"WhoAmI": handler})]
    )
    server.start()
    try:
        yield running
    finally:
        server.stop(grace=None)


def _secure(target: str, files: TlsFiles) -> grpc.Channel:
    return grpc.secure_channel(target, channel_credentials(files), options=DEFAULT_CHANNEL_OPTIONS)


def _health(channel: grpc.Channel) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with channel, pytest.raises(grpc.RpcError) as failure:
        channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT)
    return failure.value.code()


@pytest.mark.parametrize(
    ("kind", "name", "identity"),
    [
        ("nodes", "tre-a", Identity("tre-a", "node")),
        ("users", "admin", Identity("admin", "admin")),
        ("users", "researcher", Identity("researcher", "researcher")),
    ],
)
def test_network_certificate_is_served_and_identified(
    coordinator: Coordinator, network: NetworkPaths, kind: str, name: str, identity: Identity
) -> None:
    files = TlsFiles.from_dir(network.directory / kind / name)

    with _secure(coordinator.target, files) as channel:
        status = _health(channel)
        reply = channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT)

    assert status == health_pb2.HealthCheckResponse.SERVING
    assert reply == f"{identity.name}/{identity.role}".encode()
    assert coordinator.seen == [identity]


def test_plaintext_client_is_refused(coordinator: Coordinator) -> None:
    code = _refused(grpc.insecure_channel(coordinator.target))

    assert code == grpc.StatusCode.UNAVAILABLE
    assert coordinator.seen == []


def test_certificate_from_another_network_is_refused(
    coordinator: Coordinator, other_network: NetworkPaths
) -> None:
    # Same node name, but issued by another CA: the name alone must not get it in.
    code = _refused(_secure(coordinator.target, TlsFiles.from_dir(other_network.nodes["tre-a"])))

    assert code == grpc.StatusCode.UNAVAILABLE
    assert coordinator.seen == []


def test_client_that_does_not_trust_the_coordinator_refuses_it(
    coordinator: Coordinator, network: NetworkPaths, other_network: NetworkPaths
) -> None:
    own = TlsFiles.from_dir(network.nodes["tre-a"])
    files = TlsFiles(ca=other_network.ca_cert, cert=own.cert, key=own.key)

    code = _refused(_secure(coordinator.target, files))

    assert code == grpc.StatusCode.UNAVAILABLE
    assert coordinator.seen == []


def test_client_without_a_certificate_is_refused(
    coordinator: Coordinator, network: NetworkPaths
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=network.ca_cert.read_bytes())

    code = _refused(grpc.secure_channel(coordinator.target, credentials))

    assert code == grpc.StatusCode.UNAVAILABLE
    assert coordinator.seen == []


def test_coordinator_certificate_cannot_act_as_a_client(
    coordinator: Coordinator, network: NetworkPaths
) -> None:
    # Its extended key usage is serverAuth only, so a stolen coordinator key cannot be
    # used to pose as a node or user.
    code = _refused(_secure(coordinator.target, TlsFiles.from_dir(network.coordinator)))

    assert code == grpc.StatusCode.UNAVAILABLE
    assert coordinator.seen == []


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    files = TlsFiles.from_dir(tmp_path / "nowhere")

    with pytest.raises(InvalidRequest, match="fedtre ca init") as failure:
        channel_credentials(files)

    assert str(tmp_path / "nowhere" / "ca.pem") in str(failure.value)


def test_key_of_another_identity_is_rejected(network: NetworkPaths) -> None:
    own = TlsFiles.from_dir(network.nodes["tre-a"])
    files = TlsFiles(ca=own.ca, cert=own.cert, key=network.nodes["tre-b"] / "key.pem")

    with pytest.raises(InvalidRequest, match="is not the key of") as failure:
        server_credentials(files)

    assert "PRIVATE KEY" not in str(failure.value)
