"""What replicas tell each other through PostgreSQL: wake-ups, cancellations, the tick's lock."""

from __future__ import annotations

import queue
import threading

import pytest

from coordinator.store import replicas
from coordinator.store.store import Store


@pytest.fixture
def two_stores(pg_url):
    first, second = Store(pg_url, replica="r1"), Store(pg_url, replica="r2")
    yield first, second
    first.close()
    second.close()


def _wakeups(store: Store, me: str, got: queue.Queue) -> replicas.Wakeups:
    wakeups = replicas.Wakeups(
        store.engine,
        on_wake=lambda nodes: got.put(("wake", nodes)),
        on_cancel=lambda tasks: got.put(("cancel", tasks)),
        on_resync=lambda: None,
    )
    wakeups._me = me  # two replicas in one process: tell them apart
    wakeups.start()
    assert wakeups.listening.wait(10)
    return wakeups


def test_a_wake_up_and_a_cancellation_reach_the_other_replica_only(two_stores):
    # Given: two replicas listening on one schema
    first_got: queue.Queue = queue.Queue()
    second_got: queue.Queue = queue.Queue()
    first = _wakeups(two_stores[0], "r1", first_got)
    second = _wakeups(two_stores[1], "r2", second_got)
    try:
        # When: the first queues tasks for two nodes and cancels one task
        first.wake(["tre-a", "tre-b"])
        first.cancel([("tre-c", "task-1", "cancelled by alice")])
        # Then: the second hears both; the first hears nothing of its own
        assert second_got.get(timeout=10) == ("wake", ["tre-a", "tre-b"])
        assert second_got.get(timeout=10) == ("cancel", [("tre-c", "task-1", "cancelled by alice")])
        second.wake(["tre-z"])  # sent after the first's, so heard after them
        assert first_got.get(timeout=10) == ("wake", ["tre-z"])
        assert first_got.empty()
    finally:
        first.stop()
        second.stop()


def test_the_tick_runs_on_one_replica_at_a_time(two_stores):
    # Given: the first replica is in its tick
    inside, release = threading.Event(), threading.Event()
    held: list[bool] = []

    def first_tick() -> None:
        with replicas.tick_lock(two_stores[0].engine) as ok:
            held.append(ok)
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=first_tick)
    thread.start()
    assert inside.wait(10)
    # When: the second tries its own
    with replicas.tick_lock(two_stores[1].engine) as second_ok:
        pass
    release.set()
    thread.join(10)
    # Then: it skips it, and may run the next once the first is done
    assert held == [True] and second_ok is False
    with replicas.tick_lock(two_stores[1].engine) as later_ok:
        assert later_ok is True


def test_sqlite_always_ticks(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        with replicas.tick_lock(store.engine) as ok:
            assert ok is True
    finally:
        store.close()
