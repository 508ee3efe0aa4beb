"""A HELD report marks a task held; the later final report replaces it exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.domain.model import JobSpec, JobState, TaskState
from coordinator.rpc.convert import job_to_pb
from coordinator.store.store import Store
from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.client import _job_status
from fedtre.v1 import common_pb2

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = JobSpec("count", "cohort", {}, ("tre-a", "tre-b"), "default")
HELD = NodeOutput(
    Outcome.HELD,
    {},
    (RuleResult("review", False, "this TRE's output checker reviews count outputs"),),
)
APPROVED = NodeOutput(Outcome.RELEASED, {"n": 40}, (RuleResult("review", True, "approved by jo"),))
DENIED = NodeOutput(Outcome.BLOCKED, {}, (RuleResult("review", False, "denied by jo: rare"),))


def running_job(store: Store):
    job = store.create_job(SPEC, "alice", NOW)
    job = store.approve_job(job.id, "bob", NOW)
    return job, {t.node: t.task_id for t in job.tasks}


def task_of(store: Store, job_id: int, node: str):
    return next(t for t in store.get_job(job_id).tasks if t.node == node)


def test_a_held_report_marks_the_task_held_and_the_job_waits(store):
    job, tasks = running_job(store)
    store.record_result("tre-b", tasks["tre-b"], NodeOutput(Outcome.RELEASED, {"n": 10}), NOW)

    assert store.record_result("tre-a", tasks["tre-a"], HELD, NOW) is None

    task = task_of(store, job.id, "tre-a")
    assert task.state is TaskState.HELD
    assert task.output is not None and task.output.outcome is Outcome.HELD
    assert store.get_job(job.id).state is JobState.RUNNING
    assert store.jobs_awaiting_completion() == []


def test_the_final_report_replaces_the_held_one_and_completes_the_job(store):
    job, tasks = running_job(store)
    store.record_result("tre-b", tasks["tre-b"], NodeOutput(Outcome.RELEASED, {"n": 10}), NOW)
    store.record_result("tre-a", tasks["tre-a"], HELD, NOW)

    finished = store.record_result("tre-a", tasks["tre-a"], APPROVED, NOW + timedelta(minutes=5))

    assert finished is not None  # now every task is done: the job awaits completion
    task = task_of(store, job.id, "tre-a")
    assert task.state is TaskState.DONE and task.output == APPROVED


def test_a_final_report_is_never_overwritten(store):
    job, tasks = running_job(store)
    store.record_result("tre-a", tasks["tre-a"], HELD, NOW)
    store.record_result("tre-a", tasks["tre-a"], DENIED, NOW)

    # a late or repeated HELD report, or a second final one, changes nothing
    assert store.record_result("tre-a", tasks["tre-a"], HELD, NOW) is None
    assert store.record_result("tre-a", tasks["tre-a"], APPROVED, NOW) is None

    assert task_of(store, job.id, "tre-a").output == DENIED


def test_a_held_task_is_not_redelivered_when_its_node_reconnects(store):
    _, tasks = running_job(store)
    store.take_queued_tasks("tre-a", NOW)
    store.record_result("tre-a", tasks["tre-a"], HELD, NOW)

    store.node_connected("tre-a", [], ["count"], NOW)

    assert [t.task_id for t, _ in store.take_queued_tasks("tre-a", NOW)] == []


def test_the_client_sees_the_node_as_held(store):
    job, tasks = running_job(store)
    store.record_result("tre-a", tasks["tre-a"], HELD, NOW)

    message = job_to_pb(store.get_job(job.id))
    status = _job_status(message)

    held = next(t for t in message.tasks if t.node == "tre-a")
    assert held.outcome == common_pb2.OUTCOME_HELD
    assert status.tasks["tre-a"].state == "held"
    assert status.tasks["tre-a"].outcome == "held"
    assert status.held_count == 1 and not status.finished
