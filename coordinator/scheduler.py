"""The coordinator's timers: one idempotent tick, run by APScheduler every few seconds.

Deadlines and last-seen times are columns (coordinator.store.schema), so the tick holds
no state of its own: `expire_overdue(now)` finds what is due in the database and settles
it, and running it twice, after a restart, or on several replicas at once, changes
nothing more than running it once. What it does, in one pass:

- times out the unanswered tasks of running jobs past their deadline (a node paused for
  maintenance stops the clock of jobs that wait for it, or is given up at once by jobs
  that chose to finish without it), and completes their jobs as partial or failed with
  the reason per node;
- marks nodes offline whose stream has not been seen for `offline_after` seconds;
- completes jobs a crash left with every task done but no combined result.

With several replicas on PostgreSQL, each tick first takes an advisory lock
(coordinator.store.replicas.tick_lock): one replica runs it, the others skip it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from coordinator.service import CoordinatorService
from coordinator.store.store import Expiry

logger = logging.getLogger(__name__)

JOB_ID = "fedtre-expire-overdue"


def expire_overdue(service: CoordinatorService, now: datetime) -> Expiry:
    """Run one tick at time now; return what changed (coordinator.store.store.Expiry)."""
    return service.expire_overdue(now)


class Scheduler:
    """Runs the tick every `interval` seconds on a background thread, never two at once.

    lock: called before each tick; the tick runs only if the context it returns yields
    True (another replica holds the lock otherwise). None: every tick runs.
    """

    def __init__(
        self,
        service: CoordinatorService,
        interval: float,
        clock: Callable[[], datetime] | None = None,
        lock: Callable[[], AbstractContextManager[bool]] | None = None,
        after_tick: Callable[[], object] | None = None,
    ) -> None:
        """after_tick: run after each tick that ran (e.g. publishing an audit checkpoint)."""
        self._service = service
        self._after_tick = after_tick
        self._lock = lock or (lambda: contextlib.nullcontext(True))
        self._interval = interval
        self._clock = clock or service.clock
        self._scheduler = BackgroundScheduler(timezone=UTC)
        # Clear while a tick runs, so stop() can wait for it (bounded).
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        self._scheduler.add_job(
            self.tick,
            "interval",
            seconds=self._interval,
            id=JOB_ID,
            # A tick that overruns is not doubled up nor made up for: the next one sees all.
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.start()

    def tick(self) -> Expiry | None:
        """One tick; a failure is logged and the next tick tries again.

        Returns None too when another replica is running the tick.
        """
        self._idle.clear()
        try:
            with self._lock() as held:
                if not held:
                    return None
                expiry = expire_overdue(self._service, self._clock())
                if self._after_tick is not None:
                    self._after_tick()
                return expiry
        except Exception:
            logger.exception("the scheduler's tick failed; the next one retries")
            return None
        finally:
            self._idle.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop ticking; wait up to timeout seconds for a tick in progress to finish.

        Returns False when a tick was still running (e.g. stuck on an unreachable
        database): it is abandoned, which is safe, as every tick is idempotent.
        """
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        finished = self._idle.wait(timeout)
        if not finished:
            logger.warning("a scheduler tick was still running at shutdown; abandoned")
        return finished
