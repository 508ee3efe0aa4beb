"""The coordinator's configuration, built once at the entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coordinator.domain.model import DEFAULT_DEADLINE_S, DEFAULT_MAX_DELIVERIES
from fedtre.identity.lifecycle import CRL_FILE
from fedtre.identity.signing import SIGNING_KEY_FILE
from fedtre.identity.tls import TlsFiles


@dataclass(frozen=True)
class CoordinatorConfig:
    """listen: host:port to serve on (port 0 picks a free one).

    database_url: SQLAlchemy URL of the state database (SQLite file by default).
    auto_approve: approve every job on submission (rehearsal networks only).
    ping_interval: seconds of silence after which an idle task stream is pinged.
    metrics_listen: host:port of the plain-HTTP /metrics, /livez and /readyz endpoint;
        None serves none.
    health_interval: seconds between database checks behind gRPC health and /readyz.
    api_listen: host:port of the people's API (TLS, API tokens, no client certificate);
        None serves none, and people then reach `listen` with a client certificate too.
    signing_key: the job-signing key (default: job-signing-key.pem beside the TLS files).
    crl: the CA's revocation list (default: crl.pem beside the TLS files; may be absent).
    revocation_interval: seconds between checks of the CRL for streams to close.
    default_deadline: seconds each node has to answer a running job that names no deadline.
    offline_after: seconds without a heartbeat (a stream's ping) after which a node is
        marked offline; keep it above ping_interval.
    tick_interval: seconds between the scheduler's ticks (deadlines, offline nodes).
    max_deliveries: how often a task is sent to its node without an answer before it fails.
    max_result_bytes: the largest payload (JSON bytes) one node may return for one job;
        a larger one is recorded as failed.
    max_in_flight: the most tasks a node has delivered and unanswered at once.
    queue_poll_interval: with PostgreSQL (where several replicas may serve), seconds after
        which an idle task stream looks at its node's queue even unwoken: the safety net
        should another replica's wake-up (LISTEN/NOTIFY) be lost.
    committee_approvals: how many different approvers of the data access committee must
        approve an application before it becomes a project (coordinator.applications).
    """

    tls: TlsFiles
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///coordinator.sqlite"
    auto_approve: bool = False
    ping_interval: float = 15.0
    metrics_listen: str | None = None
    health_interval: float = 5.0
    api_listen: str | None = None
    signing_key: Path | None = None
    crl: Path | None = None
    revocation_interval: float = 1.0
    default_deadline: int = DEFAULT_DEADLINE_S
    offline_after: float = 60.0
    tick_interval: float = 5.0
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    max_result_bytes: int = 1_000_000
    max_in_flight: int = 16
    queue_poll_interval: float = 5.0
    committee_approvals: int = 1

    @property
    def signing_key_file(self) -> Path:
        return self.signing_key or self.tls.cert.parent / SIGNING_KEY_FILE

    @property
    def crl_file(self) -> Path:
        return self.crl or self.tls.cert.parent / CRL_FILE
