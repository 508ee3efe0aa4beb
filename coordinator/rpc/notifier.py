"""Wakes a node's open task stream when work is queued for it, or a task of it is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence


class TaskNotifier:
    """One wake-up event per connected node; lives on the server's event loop."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._closed = False
        # Per node, the (task id, reason) of delivered tasks its agent should stop.
        self._cancels: dict[str, list[tuple[str, str]]] = {}
        # With several replicas (coordinator.store.replicas), wake() and cancel() also tell
        # the others, whose streams of those nodes learn of it through wake_local() and
        # cancel_local(); None with a single coordinator.
        self.relay_wake: Callable[[Sequence[str]], None] | None = None
        self.relay_cancel: Callable[[Sequence[tuple[str, str, str]]], None] | None = None

    def subscribe(self, node_id: str) -> asyncio.Event:
        # A reconnecting node replaces its old stream: setting the old event lets the
        # old generator notice it has been superseded.
        old = self._events.get(node_id)
        event = asyncio.Event()
        if not self._closed:
            self._events[node_id] = event
        if old is not None:
            old.set()
        return event

    def is_current(self, node_id: str, event: asyncio.Event) -> bool:
        return not self._closed and self._events.get(node_id) is event

    def close(self) -> None:
        """End every stream: each generator wakes, finds itself no longer current, and returns."""
        self._closed = True
        for event in self._events.values():
            event.set()

    def unsubscribe(self, node_id: str, event: asyncio.Event) -> None:
        if self._events.get(node_id) is event:
            del self._events[node_id]
            self._cancels.pop(node_id, None)

    def cancel(self, tasks: Iterable[tuple[str, str, str]]) -> None:
        """Queue (node, task id, reason) cancellations for the nodes' open streams and wake them.

        A node without an open stream (here or at another replica) is skipped: its task is
        closed at the coordinator, so it is not sent again, and a late report of it changes
        nothing.
        """
        tasks = list(tasks)
        self.cancel_local(tasks)
        if self.relay_cancel is not None:
            self.relay_cancel(tasks)

    def cancel_local(self, tasks: Iterable[tuple[str, str, str]]) -> None:
        """cancel() for the streams of this replica only."""
        for node_id, task_id, reason in tasks:
            event = self._events.get(node_id)
            if event is not None:
                self._cancels.setdefault(node_id, []).append((task_id, reason))
                event.set()

    def take_cancels(self, node_id: str) -> list[tuple[str, str]]:
        """Return and forget the cancellations queued for node_id."""
        return self._cancels.pop(node_id, [])

    def wake(self, node_ids: Iterable[str]) -> None:
        """Wake the streams of node_ids, here and (with several replicas) at the others."""
        node_ids = list(node_ids)
        self.wake_local(node_ids)
        if self.relay_wake is not None:
            self.relay_wake(node_ids)

    def wake_local(self, node_ids: Iterable[str]) -> None:
        """wake() for the streams of this replica only."""
        for node_id in node_ids:
            event = self._events.get(node_id)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        """Wake every stream of this replica (to look at its queue after missed news)."""
        for event in self._events.values():
            event.set()
