"""Store.atomic: the store calls made inside are one transaction, committed or not at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator.domain.model import JobSpec, JobState
from coordinator.store.store import Store

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = JobSpec("count", "cohort", {}, ("tre-a", "tre-b"), "default")


def events(store: Store) -> list[str]:
    return [e.event for e in store.governance.audit_entries()]


def test_calls_inside_atomic_are_committed_together(store):
    with store.atomic():
        job = store.create_job(SPEC, "alice", NOW)
        store.governance.save_grant(job.id, b"grant", b"signature", NOW)
        running = store.approve_job(job.id, "bob", NOW)

    assert running.state is JobState.RUNNING
    assert store.get_job(job.id).state is JobState.RUNNING
    assert store.governance.grant(job.id) == (b"grant", b"signature")
    assert events(store)[-2:] == ["job.submitted", "job.approved"]
    assert store.governance.verify_audit().ok


def test_an_error_inside_atomic_rolls_back_every_call(store):
    before = events(store)
    with pytest.raises(RuntimeError), store.atomic():
        job = store.create_job(SPEC, "alice", NOW)
        store.governance.save_grant(job.id, b"grant", b"signature", NOW)
        store.approve_job(job.id, "bob", NOW)
        raise RuntimeError("a failure after the writes")

    assert store.list_jobs(None, 100) == []
    assert store.governance.grant(job.id) is None
    assert events(store) == before  # no audit entry of what was rolled back
    assert store.governance.verify_audit().ok


def test_a_nested_atomic_is_part_of_the_outer_one(store):
    with pytest.raises(RuntimeError), store.atomic():
        with store.atomic():
            store.create_job(SPEC, "alice", NOW)
        raise RuntimeError("after the inner block")

    assert store.list_jobs(None, 100) == []


def test_after_atomic_calls_get_their_own_transactions_again(store):
    with pytest.raises(RuntimeError), store.atomic():
        store.create_job(SPEC, "alice", NOW)
        raise RuntimeError("rolled back")
    job = store.create_job(SPEC, "alice", NOW)

    assert [j.id for j in store.list_jobs(None, 100)] == [job.id]


def test_reads_go_on_beside_a_write_and_see_only_what_was_committed(store):
    """A reader does not queue behind an open write transaction (SQLite: WAL snapshot)."""
    import threading

    committed = store.create_job(SPEC, "alice", NOW)
    writing, finish = threading.Event(), threading.Event()

    def writer() -> None:
        with store.atomic():
            store.create_job(SPEC, "carol", NOW)
            writing.set()
            finish.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(30)
        seen: list = []
        reader = threading.Thread(target=lambda: seen.append(store.list_jobs(None, 100)))
        reader.start()
        reader.join(20)  # generous: were it queued behind the writer it would never finish
        assert not reader.is_alive(), "a read waited for the open write transaction"
        assert [job.id for job in seen[0]] == [committed.id]  # not the uncommitted job
        assert store.get_job(committed.id).submitted_by == "alice"
    finally:
        finish.set()
        thread.join(30)
    assert len(store.list_jobs(None, 100)) == 2
