"""The coordinator's configuration, built once at the entry point."""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    tls: TlsFiles
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///coordinator.sqlite"
    auto_approve: bool = False
    ping_interval: float = 15.0
    metrics_listen: str | None = None
    health_interval: float = 5.0
