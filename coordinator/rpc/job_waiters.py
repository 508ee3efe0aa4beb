"""Requests waiting in GetJob for a job to finish (or progress), woken when this process changes it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class JobWaiters:
    """Events per job id; `changed` may be called from any thread.

    A wake-up is a hint, never the truth: a waiter reads the job again, and on its own
    every RECHECK_SECONDS as well, since another replica (or the expiry tick) may finish
    a job without this process hearing of it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextmanager
    def watch(self, job_id: int) -> Iterator[asyncio.Event]:
        """Yield an event set once job_id changes; register it before reading the job,
        so a change between the read and the wait is not missed."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._events.setdefault(job_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiting = self._events.get(job_id)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._events[job_id]

    def changed(self, job_id: int) -> None:
        with self._lock:
            waiting = list(self._events.get(job_id, ()))
        for loop, event in waiting:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its request is gone
                pass

    def __len__(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._events.values())
