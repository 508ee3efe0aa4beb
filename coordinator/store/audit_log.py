"""The coordinator's audit log: fedtre.audit's hash chain, in the coordinator's database.

Store methods call record() inside the transaction that makes the change, so a change
and its audit entry are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from coordinator.store.schema import Base
from fedtre import audit
from fedtre.audit import AuditEntry, VerifyReport

TABLES = audit.audit_tables(Base.metadata)

# Who the coordinator itself is in the log (dispatch, completion, requeues).
COORDINATOR = "coordinator"


def record(
    session: Session,
    *,
    actor: str,
    event: str,
    subject: str = "",
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> int:
    """Append one entry in session's transaction; return its sequence number."""
    return audit.append(
        session, TABLES, actor=actor, event=event, subject=subject, details=details, now=now
    )


def record_many(
    session: Session, entries: Sequence[audit.NewEntry], now: datetime | None = None
) -> list[int]:
    """Append entries, in order, in session's transaction; return their sequence numbers."""
    return audit.append_many(session, TABLES, entries, now=now)


def ensure_head(session: Session) -> None:
    audit.ensure_head(session, TABLES)


def size(session: Session) -> int:
    return audit.size(session, TABLES)


def verify(session: Session) -> VerifyReport:
    return audit.verify(session, TABLES)


def entries(session: Session, since: int = 0, limit: int | None = None) -> Iterator[AuditEntry]:
    return audit.entries(session, TABLES, since=since, limit=limit)
