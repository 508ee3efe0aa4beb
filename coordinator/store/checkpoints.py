"""The coordinator's published audit checkpoints and the agents' countersignatures.

Both are entries of the audit log itself (events audit.checkpoint and
audit.countersigned), so publishing one is audited like any other act; the evidence
against a rollback is what lies outside the database: the agents' copies and the
checkpoint files auditors keep (fedtre.checkpoints).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from coordinator.store import audit_log
from fedtre import audit
from fedtre.audit import AuditEntry, VerifyReport
from fedtre.checkpoints import COUNTERSIGNED, PUBLISHED, SignedCheckpoint, from_entries

if TYPE_CHECKING:
    from coordinator.store.store import Store

_LOG = audit_log.TABLES.log


class CheckpointStore:
    """Reads and writes checkpoint entries in the Store's database."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def head(self) -> tuple[int, str]:
        """Return (size, head hash) of the audit log."""
        with self._store._read() as s:
            return audit.head(s, audit_log.TABLES)

    def latest(self) -> AuditEntry | None:
        """Return the newest audit.checkpoint entry, or None."""
        with self._store._read() as s:
            seq = s.execute(
                sa.select(sa.func.max(_LOG.c.seq)).where(_LOG.c.event == PUBLISHED)
            ).scalar()
            if seq is None:
                return None
            return next(audit_log.entries(s, since=int(seq) - 1, limit=1))

    def latest_signed(self) -> SignedCheckpoint | None:
        """Return the newest published checkpoint with its countersignatures, or None."""
        entry = self.latest()
        if entry is None:
            return None
        return from_entries(entry, self.countersignatures(int(entry.details["size"])))

    def published(self, size: int) -> AuditEntry | None:
        """Return the audit.checkpoint entry of the checkpoint of size entries, or None."""
        with self._store._read() as s:
            seq = s.execute(
                sa.select(sa.func.max(_LOG.c.seq)).where(
                    _LOG.c.event == PUBLISHED, _LOG.c.subject == f"checkpoint:{size}"
                )
            ).scalar()
            if seq is None:
                return None
            return next(audit_log.entries(s, since=int(seq) - 1, limit=1))

    def grown_since(self, seq: int) -> bool:
        """Whether the log holds an entry after seq other than checkpoint bookkeeping."""
        with self._store._read() as s:
            found = s.execute(
                sa.select(_LOG.c.seq)
                .where(_LOG.c.seq > seq, _LOG.c.event.not_in([PUBLISHED, COUNTERSIGNED]))
                .limit(1)
            ).first()
        return found is not None

    def record_published(self, details: dict[str, Any], now: datetime) -> int:
        with self._store._tx() as s:
            return audit_log.record(
                s,
                actor=audit_log.COORDINATOR,
                event=PUBLISHED,
                subject=f"checkpoint:{details['size']}",
                details=details,
                now=now,
            )

    def record_countersigned(self, node: str, details: dict[str, Any], now: datetime) -> int:
        with self._store._tx() as s:
            return audit_log.record(
                s,
                actor=node,
                event=COUNTERSIGNED,
                subject=f"checkpoint:{details['size']}",
                details=details,
                now=now,
            )

    def countersignatures(self, size: int) -> list[AuditEntry]:
        """Return the countersignature entries of the checkpoint of size entries."""
        with self._store._read() as s:
            rows = s.execute(
                sa.select(_LOG.c.seq)
                .where(_LOG.c.event == COUNTERSIGNED, _LOG.c.subject == f"checkpoint:{size}")
                .order_by(_LOG.c.seq)
            ).all()
            return [next(audit_log.entries(s, since=int(r.seq) - 1, limit=1)) for r in rows]

    def check(self, size: int, head_hash: str) -> VerifyReport:
        """Walk the chain and check it still holds the prefix (size, head_hash)."""
        with self._store._read() as s:
            return audit.check_against(s, audit_log.TABLES, size, head_hash)
