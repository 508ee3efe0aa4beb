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
    """

    tls: TlsFiles
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///coordinator.sqlite"
    auto_approve: bool = False
    ping_interval: float = 15.0
