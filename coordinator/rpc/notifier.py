"""Wakes a node's open task stream when work is queued for it, or a task of it is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class TaskNotifier:
    """One wake-up event per connected node; lives on the server's event loop."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._closed = False
        # Per node, the (task id, reason) of delivered tasks its agent should stop.
        self._cancels: dict[str, list[tuple[str, str]]] = {}

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

        A node without an open stream is skipped: its task is closed at the coordinator,
        so it is not sent again, and a late report of it changes nothing.
        """
        for node_id, task_id, reason in tasks:
            event = self._events.get(node_id)
            if event is not None:
                self._cancels.setdefault(node_id, []).append((task_id, reason))
                event.set()

    def take_cancels(self, node_id: str) -> list[tuple[str, str]]:
        """Return and forget the cancellations queued for node_id."""
        return self._cancels.pop(node_id, [])

    def wake(self, node_ids: Iterable[str]) -> None:
        for node_id in node_ids:
            event = self._events.get(node_id)
            if event is not None:
                event.set()
