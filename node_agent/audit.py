"""The agent's audit log: every task received, run or refused, and every output released.

The same hash chain as the coordinator's (fedtre.audit), in the agent's own state
database, written in the transaction of the change it records. Verify it with
`fedtre agent audit verify --config agent.toml`; export it with `... audit export`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fedtre import audit
from fedtre.audit import AuditEntry, VerifyReport

METADATA = sa.MetaData()
TABLES = audit.audit_tables(METADATA)

# The coordinator's audit checkpoints this agent has seen and countersigned
# (node_agent.checkpoints): its evidence should the coordinator's log be rolled back.
coordinator_checkpoints = sa.Table(
    "coordinator_checkpoints",
    METADATA,
    sa.Column("size", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("head", sa.String(64), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("checkpoint", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("countersignature", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

AGENT = "agent"


def create(conn: sa.Connection) -> None:
    """Create the audit tables and the chain's head (idempotent)."""
    METADATA.create_all(conn)
    audit.ensure_head(conn, TABLES)


def record(
    conn: sa.Connection,
    *,
    event: str,
    subject: str = "",
    details: Mapping[str, Any] | None = None,
    actor: str = AGENT,
    now: datetime | None = None,
) -> int:
    """Append one entry in conn's transaction; return its sequence number."""
    return audit.append(
        conn, TABLES, actor=actor, event=event, subject=subject, details=details, now=now
    )


def verify(engine: sa.Engine) -> VerifyReport:
    with engine.connect() as conn:
        return audit.verify(conn, TABLES)


def entries(engine: sa.Engine, since: int = 0) -> Iterator[AuditEntry]:
    with engine.connect() as conn:
        yield from audit.entries(conn, TABLES, since=since)
