"""What several coordinator replicas on one PostgreSQL database need of each other.

- `Wakeups`: a replica that queues tasks or cancels them tells the others with
  PostgreSQL NOTIFY, so the replica holding a node's task stream wakes it at once
  (each stream also polls its queue now and then, the safety net for a lost NOTIFY).
- `tick_lock`: the scheduler's tick runs on one replica at a time
  (pg_try_advisory_xact_lock); the others skip it.

SQLite serves one process, so neither is used with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

logger = logging.getLogger(__name__)

# The advisory lock of the scheduler's tick is named by this and the schema.
TICK_LOCK_KEY = "fedtre-tick"
# NOTIFY payloads must stay under 8000 bytes; leave room for the envelope.
_MAX_PAYLOAD = 6000
_RECONNECT_S = 1.0


def replica_id() -> str:
    """This process's name among the replicas (recorded with each dispatch): host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_postgresql(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def tick_lock(engine: sa.Engine) -> Iterator[bool]:
    """Yield whether this replica may run the tick now; always True on SQLite.

    On PostgreSQL the lock is held by a transaction on its own connection for as long
    as the block runs, and released when it ends (or when this process dies).
    """
    if not is_postgresql(engine):
        yield True
        return
    with engine.connect() as conn, conn.begin():
        # Keyed by schema too: networks in other schemas of the database tick on their own.
        key = sa.func.hashtext(sa.literal(f"{TICK_LOCK_KEY}/") + sa.func.current_schema())
        held = bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(key))).scalar())
        yield held


def _conninfo(engine: sa.Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Wakeups:
    """Relays wake-ups and cancellations between replicas through LISTEN/NOTIFY.

    on_wake(nodes) and on_cancel([(node, task id, reason)]) are called, on the listener
    thread, with what other replicas sent; on_resync() after the listener (re)connects,
    when notifications may have been missed, so every local stream looks at its queue.
    """

    def __init__(
        self,
        engine: sa.Engine,
        on_wake: Callable[[list[str]], object],
        on_cancel: Callable[[list[tuple[str, str, str]]], object],
        on_resync: Callable[[], object],
    ) -> None:
        self._conninfo = _conninfo(engine)
        self._on_wake, self._on_cancel, self._on_resync = on_wake, on_cancel, on_resync
        self._me = replica_id()
        self._stopping = threading.Event()
        self._outbox: queue.SimpleQueue[tuple[str, list[Any]] | None] = queue.SimpleQueue()
        self._channel = ""
        self._threads: list[threading.Thread] = []
        self.listening = threading.Event()

    def start(self) -> None:
        """Find the channel of this database and schema, then listen and publish."""
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT current_database(), current_schema()").fetchone()
        scope = f"{row[0]}/{row[1]}" if row else ""
        # One channel per database and schema: replicas of other networks (or tests)
        # sharing the server never wake each other.
        self._channel = "fedtre_" + hashlib.sha256(scope.encode()).hexdigest()[:24]
        for target, name in ((self._listen, "wakeups-listen"), (self._publish, "wakeups-notify")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 3.0) -> None:
        self._stopping.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def wake(self, nodes: Sequence[str]) -> None:
        """Tell the other replicas that tasks were queued for nodes (after the commit)."""
        if nodes:
            self._outbox.put(("w", list(nodes)))

    def cancel(self, tasks: Sequence[tuple[str, str, str]]) -> None:
        """Tell the other replicas that these (node, task id, reason) were cancelled."""
        if tasks:
            self._outbox.put(("c", [list(t) for t in tasks]))

    # -- threads -------------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    self._on_resync()
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._receive(note.payload)
            except Exception:
                self.listening.clear()
                if self._stopping.is_set():
                    return
                logger.warning("listening for other replicas failed; retrying", exc_info=True)
                self._stopping.wait(_RECONNECT_S)

    def _receive(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message.get("r") == self._me:
                return  # our own, already acted on locally
            if message["k"] == "w":
                self._on_wake([str(n) for n in message["v"]])
            elif message["k"] == "c":
                self._on_cancel([(str(n), str(t), str(r)) for n, t, r in message["v"]])
        except Exception:
            logger.exception("a notification from another replica was not understood")

    def _publish(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            item = self._outbox.get()
            if item is None:
                break
            batch: list[tuple[str, list[Any]]] = [item]
            while not self._outbox.empty():  # one round trip for a burst
                more = self._outbox.get()
                if more is None:
                    self._stopping.set()
                    break
                batch.append(more)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._conninfo, autocommit=True)
                for payload in self._payloads(batch):
                    conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))
            except Exception:
                # The other replicas' streams poll their queues: they learn of it later.
                logger.warning("notifying the other replicas failed", exc_info=True)
                if conn is not None:
                    conn.close()
                conn = None
            if self._stopping.is_set():
                break
        if conn is not None:
            conn.close()

    def _payloads(self, batch: Sequence[tuple[str, list[Any]]]) -> Iterator[str]:
        nodes = sorted({n for kind, values in batch if kind == "w" for n in values})
        cancels = [c for kind, values in batch if kind == "c" for c in values]
        for kind, values in (("w", nodes), ("c", cancels)):
            chunk: list[Any] = []
            size = 0
            for value in values:
                cost = len(json.dumps(value)) + 1
                if chunk and size + cost > _MAX_PAYLOAD:
                    yield json.dumps({"r": self._me, "k": kind, "v": chunk})
                    chunk, size = [], 0
                chunk.append(value)
                size += cost
            if chunk:
                yield json.dumps({"r": self._me, "k": kind, "v": chunk})
