"""The append-only, hash-chained audit log kept by the coordinator and by each agent.

Each entry records who did what to which thing, and when. Its hash covers its own
content and the previous entry's hash, so altering, deleting or reordering any entry
breaks every link after it; `verify` walks the chain and reports the first broken link.
A one-row head table holds the latest sequence number and hash: appends lock it, so two
writers (threads, or coordinator replicas on PostgreSQL) can never fork the chain, and a
log cut short at its end no longer matches its head.

What the chain alone cannot show is a rewrite by the database's own writer: cutting the
tail and moving the head back, or recomputing every hash. Signed checkpoints do
(fedtre.checkpoints): a checkpoint records a size and the hash of the entry at that size,
and `check_against` fails unless the log still holds exactly that prefix, since each
entry's hash commits to every entry before it. `export` (JSON lines for a SIEM) keeps
a copy out of reach as well.

The functions take a SQLAlchemy connection (or ORM session) so an entry is written in
the same transaction as the change it records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditTables:
    log: sa.Table
    head: sa.Table


def audit_tables(metadata: sa.MetaData) -> AuditTables:
    """Define the audit tables in metadata (created with the rest of its tables)."""
    log = sa.Table(
        "audit_log",
        metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        # Text, not DateTime or JSON: the hash covers exactly these characters, which no
        # database driver may then re-render differently.
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("event", sa.String(64), nullable=False, index=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    head = sa.Table(
        "audit_head",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    return AuditTables(log, head)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    event: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "event": self.event,
            "subject": self.subject,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of walking a chain: ok, or the first broken link and why."""

    entries: int
    head_hash: str
    broken_at: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None and not self.problem


def entry_hash(
    prev_hash: str, seq: int, at: str, actor: str, event: str, subject: str, details: str
) -> str:
    """Return the SHA-256 linking one entry to the one before it."""
    body = json.dumps(
        [seq, at, actor, event, subject, details], separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def ensure_head(conn: sa.Connection | Any, tables: AuditTables) -> None:
    """Create the head row if the log is new (idempotent; call inside a transaction)."""
    if conn.execute(sa.select(tables.head.c.id).where(tables.head.c.id == 1)).first() is None:
        conn.execute(tables.head.insert().values(id=1, seq=0, hash=GENESIS))


def size(conn: sa.Connection | Any, tables: AuditTables) -> int:
    """Return how many entries the log holds (its head's sequence number; 0 when new)."""
    seq = conn.execute(sa.select(tables.head.c.seq).where(tables.head.c.id == 1)).scalar()
    return int(seq or 0)


@dataclass(frozen=True)
class NewEntry:
    """An entry to append: who did what to which thing (details: JSON, never secrets or data)."""

    actor: str
    event: str
    subject: str = ""
    details: Mapping[str, Any] | None = None


def append(
    conn: sa.Connection | Any,
    tables: AuditTables,
    *,
    actor: str,
    event: str,
    subject: str = "",
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> int:
    """Append one entry in the caller's transaction; return its sequence number.

    details must be JSON-compatible and must never hold secrets or data values.
    """
    return append_many(conn, tables, [NewEntry(actor, event, subject, details)], now=now)[0]


def append_many(
    conn: sa.Connection | Any,
    tables: AuditTables,
    new: Sequence[NewEntry],
    *,
    now: datetime | None = None,
) -> list[int]:
    """Append entries, in order, in the caller's transaction; return their sequence numbers.

    The head is read and written once for all of them (a job dispatched to 1,000 nodes
    is 1,000 entries): the chain is the same as from one append each.
    """
    if not new:
        return []
    # Write before reading: the update takes the head's lock (the write lock on SQLite,
    # the row lock on PostgreSQL) so no other appender can read the same head meanwhile.
    bump = (
        tables.head.update().where(tables.head.c.id == 1).values(seq=tables.head.c.seq + len(new))
    )
    if conn.execute(bump).rowcount == 0:
        ensure_head(conn, tables)
        conn.execute(bump)
    head = conn.execute(
        sa.select(tables.head.c.seq, tables.head.c.hash).where(tables.head.c.id == 1)
    ).one()
    seq, prev = int(head[0]) - len(new), str(head[1])
    at = _iso(now or datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    for entry in new:
        seq += 1
        text = json.dumps(
            dict(entry.details or {}), sort_keys=True, separators=(",", ":"), default=str
        )
        digest = entry_hash(prev, seq, at, entry.actor, entry.event, entry.subject, text)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "actor": entry.actor[:128],
                "event": entry.event,
                "subject": entry.subject[:128],
                "details": text,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    conn.execute(tables.log.insert(), rows)
    conn.execute(tables.head.update().where(tables.head.c.id == 1).values(hash=prev))
    return [int(row["seq"]) for row in rows]


def entries(
    conn: sa.Connection | Any, tables: AuditTables, *, since: int = 0, limit: int | None = None
) -> Iterator[AuditEntry]:
    """Yield entries with seq > since in order (at most limit)."""
    query = sa.select(tables.log).where(tables.log.c.seq > since).order_by(tables.log.c.seq)
    if limit is not None:
        query = query.limit(limit)
    for row in conn.execute(query):
        try:
            details = json.loads(row.details)
        except ValueError:
            details = {"unparseable": row.details}
        yield AuditEntry(
            int(row.seq),
            row.at,
            row.actor,
            row.event,
            row.subject,
            details,
            row.prev_hash,
            row.hash,
        )


def verify(conn: sa.Connection | Any, tables: AuditTables) -> VerifyReport:
    """Walk the whole chain; return the first broken link, if any."""
    expected_seq, prev, count = 1, GENESIS, 0
    rows = conn.execute(sa.select(tables.log).order_by(tables.log.c.seq))
    for row in rows:
        seq = int(row.seq)
        if seq != expected_seq:
            what = "missing (deleted)" if seq > expected_seq else "out of order"
            return VerifyReport(
                count, prev, expected_seq, f"entry {expected_seq} is {what}: found {seq} next"
            )
        if row.prev_hash != prev:
            return VerifyReport(
                count,
                prev,
                seq,
                f"entry {seq} does not follow entry {seq - 1} (deleted, inserted or reordered)",
            )
        digest = entry_hash(
            row.prev_hash, seq, row.at, row.actor, row.event, row.subject, row.details
        )
        if digest != row.hash:
            return VerifyReport(count, prev, seq, f"entry {seq} was altered: its hash differs")
        prev, expected_seq, count = row.hash, seq + 1, count + 1
    head = conn.execute(
        sa.select(tables.head.c.seq, tables.head.c.hash).where(tables.head.c.id == 1)
    ).first()
    head_seq, head_hash = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)
    if (head_seq, head_hash) != (count, prev):
        return VerifyReport(
            count,
            prev,
            count + 1 if head_seq > count else head_seq,
            f"the log ends at entry {count} but its head records entry {head_seq}: "
            "entries were deleted from the end, or the head was altered",
        )
    return VerifyReport(count, prev)


def head(conn: sa.Connection | Any, tables: AuditTables) -> tuple[int, str]:
    """Return (size, hash of the last entry) as the head row records them."""
    row = conn.execute(
        sa.select(tables.head.c.seq, tables.head.c.hash).where(tables.head.c.id == 1)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)


def check_against(
    conn: sa.Connection | Any, tables: AuditTables, size: int, head_hash: str
) -> VerifyReport:
    """Walk the chain, then check it still holds the prefix a checkpoint recorded.

    The prefix of `size` entries is intact when entry `size` still has hash head_hash:
    its hash covers every entry before it. Fails when entries were removed (the log is
    shorter), or when the log was rewritten, even with every hash recomputed.
    """
    report = verify(conn, tables)
    if not report.ok:
        return report
    if report.entries < size:
        return VerifyReport(
            report.entries,
            report.head_hash,
            report.entries + 1,
            f"the log holds {report.entries} entries but the checkpoint recorded {size}: "
            "entries were removed and the log rolled back",
        )
    found = (
        GENESIS
        if size == 0
        else conn.execute(sa.select(tables.log.c.hash).where(tables.log.c.seq == size)).scalar()
    )
    if found != head_hash:
        return VerifyReport(
            report.entries,
            report.head_hash,
            size,
            f"entry {size} does not have the hash the checkpoint recorded: the log was "
            "rewritten since the checkpoint (its hashes recomputed)",
        )
    return report


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")
