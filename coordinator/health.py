"""A periodic database check that flips the gRPC health status and fedtre_database_up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator.store.store import Store

logger = logging.getLogger(__name__)

Report = Callable[[bool], Awaitable[None]]


class DatabaseHealth:
    """Pings the store every `interval` seconds and reports each change of health.

    A ping that takes longer than `timeout` counts as a failure; while it is still
    running no other is started, so a hung database never piles up threads.
    """

    def __init__(self, store: Store, report: Report, interval: float, timeout: float) -> None:
        self._store = store
        self._report = report
        self.interval = interval
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-health")
        self._running: Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.healthy = True

    async def check(self) -> bool:
        """Ping once; return whether the database answered within the timeout."""
        if self._running is not None and not self._running.done():
            return False
        self._running = self._pool.submit(self._store.ping)
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._running), self.timeout)
            return True
        except TimeoutError:
            return False
        except Exception as exc:
            logger.debug("database ping failed", extra={"error": type(exc).__name__})
            return False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="db-health")

    async def stop(self) -> None:
        # The flag as well as the cancel: on Python 3.11, asyncio.wait_for can swallow a
        # cancellation that arrives as its future completes, and the loop would run on.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while not self._stopping:
            healthy = await self.check()
            if healthy != self.healthy:
                self.healthy = healthy
                if healthy:
                    logger.info("database reachable again; serving")
                else:
                    logger.error("database unreachable; health is NOT_SERVING")
                await self._report(healthy)
            await asyncio.sleep(self.interval)
