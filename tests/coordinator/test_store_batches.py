"""Batched dispatch and reports (a job fanned out to many nodes), on SQLite and PostgreSQL.

Each batch is one transaction; what it records is exactly what one call per node or per
report would have recorded, and a report refused in a batch leaves the others intact.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from coordinator.domain.model import JobSpec, JobState, TaskState
from coordinator.store.store import Store
from fedtre.analyses.base import NodeOutput, Outcome
from fedtre.errors import NotFound, PermissionDenied

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NODES = tuple(f"tre-{i:02d}" for i in range(12))
RELEASED = NodeOutput(Outcome.RELEASED, {"n": 10})


def running_job(store: Store, nodes: tuple[str, ...] = NODES):
    job = store.create_job(JobSpec("count", "cohort", {}, nodes, "default"), "alice", NOW)
    return store.approve_job(job.id, "bob", NOW)


def commits(store: Store) -> list[int]:
    """A list that counts the engine's commits from now on."""
    seen: list[int] = []
    sa.event.listen(store.engine, "commit", lambda _conn: seen.append(1))
    return seen


def events(store: Store, event: str) -> list[str]:
    return [e.subject for e in store.governance.audit_entries() if e.event == event]


def test_one_transaction_dispatches_every_nodes_tasks(store):
    first, second = running_job(store), running_job(store)
    counted = commits(store)

    taken = store.take_queued_tasks_for(NODES, NOW)

    assert len(counted) == 1
    assert set(taken) == set(NODES)
    for node in NODES:
        assert [(task.node, job.id) for task, job in taken[node]] == [
            (node, first.id),
            (node, second.id),
        ]
        assert all(task.state is TaskState.DELIVERED for task, _ in taken[node])
    # One audit entry per task, as one dispatch per node would have written.
    expected = {f"task:{t.task_id}" for job in (first, second) for t in job.tasks}
    assert set(events(store, "task.dispatched")) == expected
    assert store.governance.verify_audit().ok
    assert store.take_queued_tasks_for(NODES, NOW) == {node: [] for node in NODES}


def test_a_batch_respects_each_nodes_limit_pause_and_in_flight_window(store):
    nodes = ("tre-a", "tre-b", "tre-c")
    jobs = [running_job(store, nodes) for _ in range(3)]
    store.node_connected("tre-c", [], ["count"], NOW, "c1", paused=True)
    store.take_queued_tasks("tre-b", NOW, limit=2)  # tre-b: two unanswered already

    taken = store.take_queued_tasks_for(nodes, NOW, limit=2, max_in_flight=3)

    assert [job.id for _, job in taken["tre-a"]] == [jobs[0].id, jobs[1].id]  # oldest first
    assert [job.id for _, job in taken["tre-b"]] == [jobs[2].id]  # room for one more
    assert taken["tre-c"] == []  # paused


def test_a_batch_of_reports_keeps_the_good_and_refuses_the_bad_alone(store):
    job = running_job(store, ("tre-a", "tre-b"))
    other = running_job(store, ("tre-a", "tre-b"))
    tasks = {(t.job_id, t.node): t.task_id for j in (job, other) for t in j.tasks}
    counted = commits(store)

    answers = store.record_results(
        [
            ("tre-a", tasks[job.id, "tre-a"], RELEASED),
            ("tre-a", tasks[job.id, "tre-b"], RELEASED),  # another node's task
            ("tre-b", "no-such-task", RELEASED),
            ("tre-a", tasks[other.id, "tre-a"], RELEASED),
            ("tre-b", tasks[job.id, "tre-b"], NodeOutput(Outcome.BLOCKED, {})),
            ("tre-b", tasks[job.id, "tre-b"], RELEASED),  # the same task again: ignored
        ],
        NOW,
    )

    assert len(counted) == 1
    assert answers[0] is None and answers[3] is None and answers[5] is None
    assert isinstance(answers[1], PermissionDenied)
    assert isinstance(answers[2], NotFound)
    finished = answers[4]
    assert finished is not None and finished.id == job.id  # its last report: to complete
    assert {t.node: t.output.outcome for t in finished.tasks} == {
        "tre-a": Outcome.RELEASED,
        "tre-b": Outcome.BLOCKED,  # the first final report stays
    }
    assert {t.node: t.state for t in store.get_job(other.id).tasks} == {
        "tre-a": TaskState.DONE,
        "tre-b": TaskState.QUEUED,
    }
    assert sorted(events(store, "task.reported")) == sorted(
        f"task:{tasks[key]}" for key in ((job.id, "tre-a"), (other.id, "tre-a"), (job.id, "tre-b"))
    )
    assert store.governance.verify_audit().ok


def test_a_held_report_in_a_batch_waits_for_the_final_one(store):
    job = running_job(store, ("tre-a", "tre-b"))
    tasks = {t.node: t.task_id for t in job.tasks}

    answers = store.record_results(
        [
            ("tre-a", tasks["tre-a"], RELEASED),
            ("tre-b", tasks["tre-b"], NodeOutput(Outcome.HELD, {})),
        ],
        NOW,
    )

    assert answers == [None, None]
    assert store.get_job(job.id).state is JobState.RUNNING
    [final] = store.record_results([("tre-b", tasks["tre-b"], RELEASED)], NOW)
    assert final is not None and final.id == job.id
