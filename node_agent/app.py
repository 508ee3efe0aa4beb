"""A node agent assembled from its config: data sources, local state, executor and outbound link."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace

from fedtre.disclosure.cellkey import secret_tag
from fedtre.errors import InvalidRequest
from fedtre.identity.peer import identity_from_pem
from fedtre.identity.signing import Verifier, load_verify_key
from fedtre.identity.tls import DEFAULT_CHANNEL_OPTIONS, TlsFiles
from fedtre.ops_http import OpsServer
from node_agent.airlock import Courier
from node_agent.approvals import ApprovalRunner, OperatorApprovals
from node_agent.checkpoints import CheckpointWitness
from node_agent.config import AgentConfig
from node_agent.connection import AGENT_VERSION, AgentConnection
from node_agent.credentials import ReloadingCredentials
from node_agent.executor import Executor
from node_agent.gate import TaskGate
from node_agent.metrics import AgentMetrics, instrument_run, watch_sources
from node_agent.policy import LocalPolicy
from node_agent.provenance import ResultSigner
from node_agent.secret import load_or_create_secret
from node_agent.sources import close_sources, key_sources, open_sources
from node_agent.state import AgentState
from node_agent.verify import TaskVerifier

logger = logging.getLogger(__name__)

# How often a running agent looks at its pause switch (set by `fedtre agent pause`).
PAUSE_POLL_S = 1.0


class Agent:
    """Opens everything the config names; start() connects out, stop() closes it all."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        tls = TlsFiles(config.tls.ca, config.tls.cert, config.tls.key)
        _check_certificate_matches(config, tls)
        if config.tls.verify_key is None:
            raise InvalidRequest(
                "no job-verification key: this agent cannot check that tasks were approved. "
                "Put job-signing-pub.pem from this node's enrolment bundle in [tls] dir, or "
                "name it with [tls] verify_key"
            )
        # Pinned here, at start-up: tasks must carry a grant signed by this key.
        network_key = Verifier(load_verify_key(config.tls.verify_key))
        verifier = TaskVerifier(config.node_id, network_key)
        credentials = ReloadingCredentials(tls, config.node_id)
        secret = load_or_create_secret(config.secret_path)
        config = replace(config, policy=config.policy.keyed(secret_tag=secret_tag(secret)))
        self.config = config
        self.sources = key_sources(open_sources(config), config, secret)
        self.metrics = AgentMetrics(config.node_id, AGENT_VERSION, config.analyses)
        watch_sources(self.sources, self.metrics)
        self.state = AgentState(config.state_db)
        self.witness = CheckpointWitness(network_key, tls, self.state)
        policy = LocalPolicy.from_config(config)
        self.executor = Executor(policy, self.sources, self.state)
        self.approvals = OperatorApprovals(self.state)
        self.gate = TaskGate(
            verifier, self.executor, policy, config.governance, self.state, self.approvals
        )
        self.connection = AgentConnection(
            config.coordinator,
            credentials,
            [d.schema for d in config.datasets.values()],
            config.analyses,
            instrument_run(
                self.gate.run,
                lambda task_id: self.state.stored_result(task_id) is not None,
                self.metrics,
            ),
            channel_options=DEFAULT_CHANNEL_OPTIONS,
            on_reconnect=self.metrics.reconnects.inc,
            workers=config.max_concurrent_tasks,
            paused=lambda: self.state.paused() is not None,
            on_cancel=self.executor.cancel,
            witness=self.witness.witness,
            sign_result=ResultSigner(
                config.node_id,
                tls,
                self.state,
                AGENT_VERSION,
                {name: ds.version for name, ds in config.datasets.items()},
            ),
        )
        self.metrics.connected.set_function(lambda: float(self.connection.connected.is_set()))
        # Sends the final outcome of each output the TRE's output checker decided on.
        self.courier = Courier(
            self.state, self.connection.report, on_reported=self.metrics.output_reviewed
        )
        # Runs, or refuses, the tasks that waited for the TRE operator's approval.
        self.approval_runner = ApprovalRunner(
            self.approvals,
            self.gate.run_verified,
            self.connection.report,
            fetch_application=self.connection.project_application,
        )
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._ops: OpsServer | None = None
        self.metrics_port = 0

    def start(self) -> None:
        if self.config.metrics_listen is not None:
            self._ops = OpsServer(
                self.config.metrics_listen, self.metrics.registry, live=self.live, ready=self.ready
            )
            self.metrics_port = self._ops.start()
        self._thread = threading.Thread(
            target=self.connection.run, name=f"agent-{self.config.node_id}", daemon=True
        )
        self._thread.start()
        self._pause_watch = threading.Thread(
            target=self._watch_pause, name=f"pause-{self.config.node_id}", daemon=True
        )
        self._pause_watch.start()
        self.courier.start()
        self.approval_runner.start()
        logger.info(
            "agent started",
            extra={
                "node_id": self.config.node_id,
                "coordinator": self.config.coordinator,
                "metrics_port": self.metrics_port or None,
            },
        )

    def live(self) -> bool:
        """Whether the agent works: its connection loop is running (it retries on its own)."""
        return self._thread is not None and self._thread.is_alive()

    def ready(self) -> bool:
        """Whether the agent serves tasks: its task stream to the coordinator is open."""
        return self.live() and self.connection.connected.is_set()

    def _watch_pause(self) -> None:
        """Reopen the task stream when the operator pauses or resumes (`fedtre agent pause`),
        so the coordinator learns of it within PAUSE_POLL_S seconds."""
        paused = self.state.paused() is not None
        while not self._stopped.wait(PAUSE_POLL_S):
            try:
                now = self.state.paused() is not None
            except Exception:
                logger.exception("reading the pause switch failed")
                continue
            if now != paused:
                paused = now
                logger.info("agent paused" if now else "agent resumed")
                self.connection.reopen()

    def stop(self) -> None:
        self._stopped.set()
        if self._ops is not None:
            self._ops.close()
            self._ops = None
        self.courier.stop(wait=False)
        self.approval_runner.stop(wait=False)
        self.connection.stop()  # ends a report in flight, so the courier stops promptly
        self.courier.stop()
        self.approval_runner.stop()
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
            f"node_id = '{config.node_id}'; use the bundle `fedtre ca init` wrote for this node"
        )
