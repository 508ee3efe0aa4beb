"""The agent as a witness of the coordinator's audit log (fedtre.checkpoints).

Each checkpoint the coordinator sends is checked against the network's pinned key and
against the newest one this agent has seen (kept in its state database). A rollback
(fewer entries than seen before, or as many with another head) is refused: logged,
recorded in the agent's own audit log, and not countersigned. Any other checkpoint is
kept, audited, and countersigned with the key of the agent's current certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from fedtre import checkpoints
from fedtre.checkpoints import Checkpoint, CheckpointError, Countersignature, SignedCheckpoint
from fedtre.identity import provenance
from fedtre.identity.signing import Verifier
from fedtre.identity.tls import TlsFiles
from node_agent import audit as agent_audit
from node_agent.state import AgentState

logger = logging.getLogger(__name__)

_SEEN = agent_audit.coordinator_checkpoints


class CheckpointWitness:
    """Checks, keeps and countersigns the coordinator's audit checkpoints."""

    def __init__(
        self,
        verifier: Verifier,
        files: TlsFiles,
        state: AgentState,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._verifier = verifier
        self._files = files
        self._state = state
        self._clock = clock

    def witness(self, data: bytes, signature: bytes) -> bytes | None:
        """Return this agent's countersignature of a checkpoint, or None when it is refused
        (not signed by the network, a rollback) or was countersigned before."""
        try:
            checkpoint = SignedCheckpoint(data, signature).verified(self._verifier)
        except CheckpointError as exc:
            logger.error("audit checkpoint refused: %s", exc)
            return None
        now = self._clock()
        with self._state.engine.begin() as conn:
            seen = conn.execute(sa.select(_SEEN).order_by(_SEEN.c.size.desc()).limit(1)).first()
            if seen is not None:
                before = Checkpoint(int(seen.size), seen.head, seen.at)
                if checkpoint.rolls_back(before):
                    self._rolled_back(conn, before, checkpoint, now)
                    return None
                if checkpoint.size == before.size:
                    return None  # the same checkpoint again (a reconnect)
            countersignature = checkpoints.countersign(
                provenance.load_private_key(self._files.key.read_bytes()), data
            )
            conn.execute(
                _SEEN.insert().values(
                    size=checkpoint.size, head=checkpoint.head, at=checkpoint.at,
                    checkpoint=data, signature=signature, countersignature=countersignature,
                    received_at=now,
                )
            )  # fmt: skip
            agent_audit.record(
                conn,
                event="audit.checkpoint_countersigned",
                subject=f"checkpoint:{checkpoint.size}",
                details={"size": checkpoint.size, "head": checkpoint.head, "at": checkpoint.at},
                now=now,
            )
        return countersignature

    def _rolled_back(
        self, conn: sa.Connection, seen: Checkpoint, got: Checkpoint, now: datetime
    ) -> None:
        details = {
            "seen_size": seen.size,
            "seen_head": seen.head,
            "received_size": got.size,
            "received_head": got.head,
        }
        agent_audit.record(
            conn,
            event="audit.rollback_detected",
            subject=f"checkpoint:{got.size}",
            details=details,
            now=now,
        )
        logger.error(
            "the coordinator's audit log was rolled back: a checkpoint of %d entries after "
            "one of %d; not countersigned",
            got.size,
            seen.size,
            extra=details,
        )


def newest_seen(state: AgentState, node: str, certificate: bytes) -> SignedCheckpoint | None:
    """The newest coordinator checkpoint this agent countersigned, with its
    countersignature (certificate: the PEM of the node's certificate that made it)."""
    with state.engine.connect() as conn:
        row = conn.execute(sa.select(_SEEN).order_by(_SEEN.c.size.desc()).limit(1)).first()
    if row is None:
        return None
    counter = Countersignature(node, row.countersignature, certificate)
    return SignedCheckpoint(row.checkpoint, row.signature, (counter,))
