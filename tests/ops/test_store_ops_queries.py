"""The store's read-only operations queries, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.domain.model import JobSpec, JobState, TaskState
from coordinator.store.schema import Base
from coordinator.store.store import Store
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome
from fedtre.errors import Unavailable

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
COHORT = [DatasetSchema("cohort", {"age": "integer"})]


def job(store: Store, nodes: tuple[str, ...], project: str = "default", at: datetime = T0):
    return store.create_job(JobSpec("count", "cohort", {}, nodes, project), "alice", at)


def test_jobs_are_filtered_by_project_and_by_whole_node_id(store):
    a = job(store, ("tre-a",), "alpha")
    ab = job(store, ("tre-a", "tre-b"), "beta")
    tre_ab = job(store, ("tre-ab",), "beta")
    under = job(store, ("tre_a",), "beta")

    def ids(**filters):
        return {j.id for j in store.list_jobs(None, 100, **filters)}

    assert ids(project="beta") == {ab.id, tre_ab.id, under.id}
    assert ids(node="tre-a") == {a.id, ab.id}
    assert ids(node="tre-b") == {ab.id}
    assert ids(node="tre_a") == {under.id}
    assert ids(node="tre-%") == set()
    assert ids(node="tre") == set()
    assert ids(project="beta", node="tre-a") == {ab.id}
    assert {j.id for j in store.list_jobs(JobState.PENDING_APPROVAL, 100, node="tre-b")} == {ab.id}


def test_network_status_counts_queues_and_oldest_waits(store):
    store.node_connected("tre-a", COHORT, ["count"], T0)
    store.node_connected("tre-b", COHORT, ["count"], T0)
    store.node_disconnected("tre-b", T0 + timedelta(minutes=1))
    first = job(store, ("tre-a", "tre-b"))
    second = job(store, ("tre-a", "tre-b"))
    store.approve_job(first.id, "bob", T0 + timedelta(minutes=2))
    store.approve_job(second.id, "bob", T0 + timedelta(minutes=3))
    job(store, ("tre-a",))  # pending approval
    delivered = store.take_queued_tasks("tre-a", T0 + timedelta(minutes=4), limit=1)

    status = store.network_status()

    nodes = {n.node_id: n for n in status.nodes}
    assert (nodes["tre-a"].online, nodes["tre-a"].queued, nodes["tre-a"].delivered) == (True, 1, 1)
    assert (nodes["tre-b"].online, nodes["tre-b"].queued, nodes["tre-b"].delivered) == (False, 2, 0)
    assert nodes["tre-b"].last_seen == T0 + timedelta(minutes=1)
    assert nodes["tre-a"].oldest_queued_at == T0 + timedelta(minutes=3)
    assert nodes["tre-a"].oldest_delivered_at == T0 + timedelta(minutes=4)
    assert nodes["tre-b"].oldest_queued_at == T0 + timedelta(minutes=2)
    assert nodes["tre-b"].oldest_delivered_at is None
    assert status.jobs_by_state == {
        JobState.PENDING_APPROVAL: 1,
        JobState.REJECTED: 0,
        JobState.RUNNING: 2,
        JobState.COMPLETED: 0,
        JobState.PARTIAL: 0,
        JobState.FAILED: 0,
        JobState.CANCELLED: 0,
    }
    assert status.tasks_by_node_state[("tre-a", TaskState.DELIVERED)] == 1
    assert status.tasks_by_node_state[("tre-b", TaskState.DONE)] == 0
    assert delivered[0][0].queued_at == T0 + timedelta(minutes=2)


def test_recent_failures_are_the_newest_failed_or_refused_tasks(store):
    running = store.approve_job(job(store, ("tre-a", "tre-b", "tre-c")).id, "bob", T0)
    tasks = {t.node: t for t in running.tasks}
    for node in tasks:
        store.take_queued_tasks(node, T0)
    store.record_result(
        "tre-a", tasks["tre-a"].task_id, NodeOutput(Outcome.FAILED, {}, error="boom"), T0
    )
    store.record_result(
        "tre-b",
        tasks["tre-b"].task_id,
        NodeOutput(Outcome.REFUSED, {}, error="not served"),
        T0 + timedelta(seconds=1),
    )
    store.record_result("tre-c", tasks["tre-c"].task_id, NodeOutput(Outcome.BLOCKED, {}), T0)

    failures = store.network_status(recent_failures=10).recent_failures

    assert [(f.node, f.outcome, f.error) for f in failures] == [
        ("tre-b", Outcome.REFUSED, "not served"),
        ("tre-a", Outcome.FAILED, "boom"),
    ]
    assert {f.job_id for f in failures} == {running.id}
    assert [f.node for f in store.network_status(recent_failures=1).recent_failures] == ["tre-b"]


def test_ping_raises_unavailable_when_the_tables_are_gone(store):
    store.ping()
    with store.engine.begin() as conn:
        Base.metadata.drop_all(conn)

    with pytest.raises(Unavailable):
        store.ping()
