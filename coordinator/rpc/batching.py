"""Group commit for the agents' RPCs: calls that arrive while a batch is written join the next.

A job fanned out to 1,000 nodes wakes 1,000 task streams at once and brings 1,000 reports
back. Written one transaction each, they queue on the database's writer one by one (on
SQLite, one at a time by design); written in batches, they cost a few transactions. A
lone call is written at once, so batching adds no wait when the coordinator is quiet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from fedtre.errors import Unavailable

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# Most items in one transaction: bounds how long one commit holds the writer.
DEFAULT_MAX_BATCH = 500


class Batcher(Generic[Item, Result]):
    """Runs write(items) on a worker thread, one batch at a time, for calls from the event loop.

    write returns one entry per item, in order: the item's result, or an Exception raised
    to that item's caller alone. An exception raised by write itself goes to every caller
    of the batch. on_abandoned(item, result) runs (on a worker thread) for a result whose
    caller went away meanwhile: e.g. to requeue tasks taken for a stream that ended.
    on_batch(size) is told each batch's size (a metric).
    """

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Sequence[Result | Exception]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_abandoned: Callable[[Item, Result], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._on_abandoned = on_abandoned
        self._on_batch = on_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, item: Item) -> Result:
        """Write item with whatever else is waiting; return its result or raise its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._writer is None:
            # Started on the next turn of the loop, so callers woken together (a job's
            # streams) are in the first batch rather than the second.
            self._writer = loop.create_task(self._write_all())
        return await future

    async def _write_all(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write_batch(batch)
        finally:
            self._writer = None

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        if self._on_batch is not None:
            self._on_batch(len(items))
        try:
            results = await asyncio.to_thread(self._write, items)
        except BaseException as exc:  # noqa: BLE001 - every caller must hear of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else Unavailable("the coordinator is shutting down; try again")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        abandoned = []
        for (item, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled while the batch was written
                if not isinstance(result, Exception):
                    abandoned.append((item, result))
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if abandoned and self._on_abandoned is not None:
            await asyncio.to_thread(self._abandon, abandoned)

    def _abandon(self, abandoned: list[tuple[Item, Result]]) -> None:
        assert self._on_abandoned is not None
        for item, result in abandoned:
            try:
                self._on_abandoned(item, result)
            except Exception:  # one failure must not keep the others from being handled
                logger.exception("handling an abandoned batch result failed")
