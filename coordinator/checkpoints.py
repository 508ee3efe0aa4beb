"""Publishing signed checkpoints of the coordinator's audit log, and taking countersignatures.

The scheduler's tick publishes a checkpoint (fedtre.checkpoints) when the last one is
older than `interval_s` and the log has grown since by more than checkpoint bookkeeping;
each agent's stream sends the newest one (coordinator.rpc.agent_servicer), and the agent
countersigns it with its node key. Countersignatures are checked here and recorded in
the audit log with the certificate that made them, so `fedtre audit checkpoint` writes
a file anyone holding the network's keys can verify.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from coordinator.store.checkpoints import CheckpointStore
from fedtre import checkpoints
from fedtre.checkpoints import Checkpoint, CheckpointError, Countersignature, SignedCheckpoint
from fedtre.identity.signing import Signer

logger = logging.getLogger(__name__)

# Seconds between checkpoints while the log grows (an idle log gets none).
CHECKPOINT_INTERVAL_S = 600.0
# Every stream asks for the newest checkpoint at each heartbeat: one read serves them all
# for this long (a checkpoint published here is seen at once).
NEWEST_TTL_S = 5.0


class AuditCheckpoints:
    """The coordinator's side of audit checkpoints."""

    def __init__(
        self,
        store: CheckpointStore,
        signer: Signer,
        clock: Callable[[], datetime],
        interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._interval = timedelta(seconds=interval_s)
        self._newest: tuple[float, SignedCheckpoint | None] | None = None

    def latest(self) -> SignedCheckpoint | None:
        """Return the newest published checkpoint with its countersignatures, or None."""
        return self._store.latest_signed()

    def newest(self) -> SignedCheckpoint | None:
        """Return the newest published checkpoint alone (what agents are sent), or None."""
        cached = self._newest
        if cached is not None and time.monotonic() - cached[0] < NEWEST_TTL_S:
            return cached[1]
        entry = self._store.latest()
        newest = None if entry is None else checkpoints.from_entries(entry, ())
        self._newest = (time.monotonic(), newest)
        return newest

    def publish_if_due(self, force: bool = False) -> SignedCheckpoint | None:
        """Sign and record a checkpoint of the log as it is now, if one is due (or force).

        Returns the new checkpoint, or None when none was due.
        """
        now = self._clock()
        entry = self._store.latest()
        if entry is not None and not force:
            published = datetime.fromisoformat(entry.at)
            if now - published < self._interval or not self._store.grown_since(entry.seq):
                return None
        size, head = self._store.head()
        signed = checkpoints.sign(self._signer, Checkpoint(size, head, checkpoints.at_now(now)))
        self._store.record_published(checkpoints.published_details(signed), now)
        self._newest = (time.monotonic(), signed)
        logger.info("audit checkpoint published", extra={"size": size})
        return signed

    def countersigned(self, node: str, certificate: bytes, data: bytes, signature: bytes) -> None:
        """Record node's countersignature of a checkpoint this coordinator published.

        Raises CheckpointError (INVALID_ARGUMENT) when data is not a published checkpoint
        or the countersignature does not verify against the node's certificate.
        """
        checkpoint = checkpoints.parse(data)
        published = self._store.published(checkpoint.size)
        if published is None or str(published.details.get("checkpoint")).encode() != data:
            raise CheckpointError(
                "the checkpoint countersigned is not one this coordinator published"
            )
        counter = Countersignature(node, signature, certificate)
        checkpoints.check_countersignature(data, counter)
        self._store.record_countersigned(
            node, checkpoints.countersigned_details(data, counter), self._clock()
        )
