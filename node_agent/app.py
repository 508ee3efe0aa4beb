"""A node agent assembled from its config: data sources, local state, executor and outbound link."""

from __future__ import annotations

import logging
import signal
import threading

from fedtre.errors import InvalidRequest
from fedtre.identity.peer import identity_from_pem
from fedtre.identity.tls import DEFAULT_CHANNEL_OPTIONS, TlsFiles, channel_credentials
from node_agent.config import AgentConfig
from node_agent.connection import AgentConnection
from node_agent.executor import Executor
from node_agent.policy import LocalPolicy
from node_agent.sources import close_sources, open_sources
from node_agent.state import AgentState

logger = logging.getLogger(__name__)


class Agent:
    """Opens everything the config names; start() connects out, stop() closes it all."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        tls = TlsFiles(config.tls.ca, config.tls.cert, config.tls.key)
        _check_certificate_matches(config, tls)
        credentials = channel_credentials(tls)
        self.sources = open_sources(config)
        self.state = AgentState(config.state_db)
        self.executor = Executor(LocalPolicy.from_config(config), self.sources, self.state)
        self.connection = AgentConnection(
            config.coordinator,
            credentials,
            [d.schema for d in config.datasets.values()],
            config.analyses,
            self.executor.run,
            channel_options=DEFAULT_CHANNEL_OPTIONS,
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.connection.run, name=f"agent-{self.config.node_id}", daemon=True
        )
        self._thread.start()
        logger.info(
            "agent started",
            extra={"node_id": self.config.node_id, "coordinator": self.config.coordinator},
        )

    def stop(self) -> None:
        self.connection.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.state.close()
        close_sources(self.sources)
        logger.info("agent stopped", extra={"node_id": self.config.node_id})

    def run_forever(self) -> None:
        """Run until SIGINT or SIGTERM."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        stop.wait()
        self.stop()


def _check_certificate_matches(config: AgentConfig, tls: TlsFiles) -> None:
    try:
        pem = tls.cert.read_bytes()
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the agent certificate {tls.cert}: {exc.strerror}"
        ) from exc
    identity = identity_from_pem(pem)
    if identity.role != "node" or identity.name != config.node_id:
        raise InvalidRequest(
            f"{tls.cert} is the certificate of {identity.role} '{identity.name}', but the config says "
            f"node_id = '{config.node_id}'; use the bundle `fedtre network init` wrote for this node"
        )
