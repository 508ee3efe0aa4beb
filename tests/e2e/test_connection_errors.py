"""Each way of failing to reach the coordinator gets its own message with the fix, for
people (the CLI) and for agents (their log), against real servers on loopback (issue 17,
item 7): a host name the certificate does not name, the agents' port used by a person,
the API port used by an agent, and nothing listening. Agents also say when they are
connected, and warn of a certificate about to expire."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorServer
from fedtre.analyses.base import DatasetSchema, NodeOutput
from fedtre.cli.main import main
from fedtre.client import Client
from fedtre.errors import Unavailable
from fedtre.identity.ca import init_network, issue_node
from fedtre.identity.tls import TlsFiles
from fedtre.testing import eventually
from node_agent.connection import AgentConnection
from node_agent.credentials import ReloadingCredentials


class Coordinator:
    """A real coordinator (both ports) on its own event loop, restartable."""

    def __init__(self, pki: Path, database: Path) -> None:
        self.config = CoordinatorConfig(
            tls=TlsFiles.from_dir(pki / "coordinator"),
            listen="127.0.0.1:0",
            api_listen="127.0.0.1:0",
            database_url=f"sqlite:///{database}",
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: CoordinatorServer | None = None

    def start(self) -> None:
        self.server = CoordinatorServer(self.config)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace=0.5), self.loop).result(30)
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def agent_port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def api_port(self) -> int:
        assert self.server is not None
        return self.server.api_port


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A network whose coordinator certificate names coordinator.example.org and localhost,
    but not 127.0.0.1, the address a careless person dials."""
    init_network(
        tmp_path / "pki",
        ["tre-a"],
        users=(),
        coordinator_hosts=["coordinator.example.org", "localhost"],
    )
    return tmp_path / "pki"


@pytest.fixture
def coordinator(pki: Path, tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(pki, tmp_path / "coordinator.sqlite")
    server.start()
    yield server
    server.close()


@pytest.fixture
def token(coordinator: Coordinator) -> str:
    assert coordinator.server is not None
    _, _, token = coordinator.server.admin.bootstrap_admin("admin")
    return token


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_host_the_certificate_does_not_name_says_to_reissue_it_and_reissuing_works(
    coordinator: Coordinator, pki: Path, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = pki / "ca" / "ca.pem"
    target = f"127.0.0.1:{coordinator.api_port}"

    # When a person dials an address the certificate does not name
    with Client(target, ca=ca, token=token) as client, pytest.raises(Unavailable) as failure:
        client.nodes()

    # Then they are told which names it has, and how to re-issue it
    message = str(failure.value)
    assert "not valid for '127.0.0.1'" in message
    assert "it names coordinator.example.org, localhost" in message
    assert "fedtre ca issue-coordinator PKI-DIR --hosts 127.0.0.1" in message

    # and when the admin does so and restarts the coordinator, the same address works
    hosts = "coordinator.example.org,localhost,127.0.0.1"
    assert main(["ca", "issue-coordinator", str(pki), "--hosts", hosts]) == 0
    assert "Restart the coordinator" in capsys.readouterr().out
    coordinator.stop()
    coordinator.start()
    with Client(f"127.0.0.1:{coordinator.api_port}", ca=ca, token=token) as client:
        assert client.nodes() == []


def test_a_person_on_the_agents_port_is_sent_to_the_api_port(
    coordinator: Coordinator, pki: Path, token: str
) -> None:
    target = f"localhost:{coordinator.agent_port}"

    with Client(target, ca=pki / "ca" / "ca.pem", token=token) as client:
        with pytest.raises(Unavailable) as failure:
            client.nodes()

    message = str(failure.value)
    assert f"localhost:{coordinator.agent_port} asks for a client certificate" in message
    assert "port for agents" in message and "API port (--api-listen" in message


def test_nothing_listening_says_so_in_the_cli(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "me").mkdir()
    (tmp_path / "me" / "ca.pem").write_bytes((pki / "ca" / "ca.pem").read_bytes())
    (tmp_path / "me" / "token").write_text("ft1.000000000000.x\n")
    port = closed_port()

    code = main(["nodes", "--coordinator", f"localhost:{port}", "--identity", str(tmp_path / "me")])

    err = capsys.readouterr().err
    assert code == 2
    assert f"nothing is listening on localhost:{port} (connection refused)" in err
    assert "Traceback" not in err


# -- agents -------------------------------------------------------------------------------


def connection(pki: Path, target: str, node: str = "tre-a") -> AgentConnection:
    credentials = ReloadingCredentials(TlsFiles.from_dir(pki / "nodes" / node), node)
    schema = DatasetSchema("cohort", {"age": "integer"})
    return AgentConnection(target, credentials, [schema], ["count"], _never)


def _never(_task: object) -> NodeOutput:
    raise AssertionError("no task is sent in these tests")


def run_until(link: AgentConnection, condition, what: str) -> None:
    thread = threading.Thread(target=link.run, daemon=True)
    thread.start()
    try:
        eventually(condition, timeout=20, what=what)
    finally:
        link.stop()
        thread.join(timeout=10)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_an_agent_says_once_that_it_is_connected_and_as_whom(
    coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node_agent")
    target = f"localhost:{coordinator.agent_port}"
    link = connection(coordinator.config.tls.ca.parent.parent, target)

    run_until(link, link.connected.is_set, "the agent to connect")

    connected = [m for m in messages(caplog, logging.INFO) if m.startswith("connected to")]
    assert connected == [f"connected to {target} as tre-a"]
    assert not messages(caplog, logging.WARNING)  # a year-long certificate: no warning


def test_an_agent_warns_when_its_certificate_expires_within_30_days(
    coordinator: Coordinator, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issue_node(pki, "tre-b", validity_days=20)
    caplog.set_level(logging.INFO, logger="node_agent")
    link = connection(pki, f"localhost:{coordinator.agent_port}", node="tre-b")

    run_until(link, link.connected.is_set, "the agent to connect")

    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "certificate expires in 19 days" in warnings[0]
    assert "fedtre ca renew PKI-DIR tre-b" in warnings[0]


def test_an_agent_on_the_api_port_is_told_to_use_the_agents_port(
    coordinator: Coordinator, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node_agent")
    link = connection(pki, f"localhost:{coordinator.api_port}")

    run_until(
        link,
        lambda: any("refused this agent" in m for m in messages(caplog, logging.ERROR)),
        "the refusal",
    )

    refusal = next(m for m in messages(caplog, logging.ERROR) if "refused this agent" in m)
    assert "this is the coordinator's API port" in refusal
    assert "agent port (--listen, by default 50051)" in refusal
    assert not link.connected.is_set()


def test_an_agent_dialling_an_unnamed_host_says_why_once(
    coordinator: Coordinator, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node_agent")
    link = connection(pki, f"127.0.0.1:{coordinator.agent_port}")

    def retried_twice() -> bool:
        return sum("task stream lost" in m for m in messages(caplog, logging.WARNING)) >= 2

    run_until(link, retried_twice, "two attempts")

    causes = [m for m in messages(caplog, logging.ERROR) if "not valid for '127.0.0.1'" in m]
    assert len(causes) == 1
    assert "fedtre ca issue-coordinator" in causes[0]


def test_an_agent_with_nothing_to_dial_says_so(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="node_agent")
    port = closed_port()
    link = connection(pki, f"localhost:{port}")

    run_until(
        link,
        lambda: any("connection refused" in m for m in messages(caplog, logging.ERROR)),
        "the cause",
    )

    assert not link.connected.is_set()
