"""The coordinator's store: job and task lifecycle, exactly-once recording, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from coordinator.domain.model import JobSpec, JobState, TaskState
from coordinator.store.store import Store
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome
from fedtre.errors import Conflict, NotFound, PermissionDenied

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = JobSpec("count", "cohort", {}, ("tre-a", "tre-b"), "default")
RELEASED = NodeOutput(Outcome.RELEASED, {"n": 10})


def approved_job(store: Store):
    job = store.create_job(SPEC, "alice", NOW)
    return store.approve_job(job.id, "bob", NOW)


def test_a_new_job_waits_for_approval_with_no_tasks(store):
    job = store.create_job(SPEC, "alice", NOW)

    assert job.state is JobState.PENDING_APPROVAL
    assert store.get_job(job.id).tasks == ()
    assert store.take_queued_tasks("tre-a", NOW) == []


def test_approval_queues_one_task_per_target_node(store):
    job = approved_job(store)

    assert job.state is JobState.RUNNING
    assert sorted(t.node for t in job.tasks) == ["tre-a", "tre-b"]
    assert {t.state for t in job.tasks} == {TaskState.QUEUED}


def test_deciding_twice_is_a_conflict(store):
    job = approved_job(store)

    with pytest.raises(Conflict):
        store.approve_job(job.id, "bob", NOW)
    with pytest.raises(Conflict):
        store.reject_job(job.id, "bob", "late", NOW)


def test_unknown_job_is_not_found(store):
    with pytest.raises(NotFound):
        store.get_job(424242)


def test_queued_tasks_are_taken_once_and_only_by_their_node(store):
    job = approved_job(store)

    taken = store.take_queued_tasks("tre-a", NOW)

    assert [(t.node, j.id) for t, j in taken] == [("tre-a", job.id)]
    assert store.take_queued_tasks("tre-a", NOW) == []
    assert [t.node for t, _ in store.take_queued_tasks("tre-b", NOW)] == ["tre-b"]


def test_reconnecting_node_gets_its_unreported_tasks_again(store):
    approved_job(store)
    [(task, _)] = store.take_queued_tasks("tre-a", NOW)

    store.node_connected("tre-a", [DatasetSchema("cohort", {"age": "integer"})], ["count"], NOW)

    assert [t.task_id for t, _ in store.take_queued_tasks("tre-a", NOW)] == [task.task_id]


def test_a_node_cannot_record_another_nodes_result(store):
    job = approved_job(store)
    other = next(t for t in job.tasks if t.node == "tre-b")

    with pytest.raises(PermissionDenied):
        store.record_result("tre-a", other.task_id, RELEASED, NOW)
    assert store.get_job(job.id).tasks[1].output is None


def test_results_are_recorded_once_and_the_last_one_hands_over_the_job(store):
    job = approved_job(store)
    first, second = job.tasks

    assert store.record_result(first.node, first.task_id, RELEASED, NOW) is None
    assert (
        store.record_result(first.node, first.task_id, NodeOutput(Outcome.BLOCKED, {}), NOW) is None
    )
    finished = store.record_result(second.node, second.task_id, RELEASED, NOW)

    assert finished is not None and finished.id == job.id
    assert [t.output.outcome for t in finished.tasks] == [Outcome.RELEASED, Outcome.RELEASED]
    assert store.record_result(second.node, second.task_id, RELEASED, NOW) is None


def test_concurrent_reports_of_one_task_record_it_once(store):
    job = approved_job(store)
    task = job.tasks[0]
    barrier = threading.Barrier(4)
    errors = []

    def report():
        barrier.wait()
        try:
            store.record_result(task.node, task.task_id, RELEASED, NOW)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_job(job.id).tasks[0].output == RELEASED


def test_concurrent_last_results_complete_the_job_exactly_once(store):
    handed_over = []
    for _ in range(5):
        job = approved_job(store)
        barrier = threading.Barrier(len(job.tasks))

        def report(task, barrier=barrier):
            barrier.wait()
            handed_over.append(store.record_result(task.node, task.task_id, RELEASED, NOW))

        threads = [threading.Thread(target=report, args=(t,)) for t in job.tasks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len([j for j in handed_over if j is not None]) == 5


def test_completion_is_stored_with_the_combined_result(store):
    job = approved_job(store)
    for task in job.tasks:
        store.record_result(task.node, task.task_id, RELEASED, NOW)
    assert [j.id for j in store.jobs_awaiting_completion()] == [job.id]

    store.complete_job(job.id, JobState.COMPLETED, {"n": 20}, NOW)

    assert store.get_job(job.id).combined == {"n": 20}
    assert store.jobs_awaiting_completion() == []
    assert store.complete_job(job.id, JobState.PARTIAL, {"n": 0}, NOW) is None
    assert store.get_job(job.id).combined == {"n": 20}


def test_list_jobs_filters_by_state(store):
    pending = store.create_job(SPEC, "alice", NOW)
    running = approved_job(store)

    assert [j.id for j in store.list_jobs(JobState.PENDING_APPROVAL, 10)] == [pending.id]
    assert [j.id for j in store.list_jobs(None, 10)] == [running.id, pending.id]
