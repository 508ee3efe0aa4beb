"""The scheduler's tick: deadlines, silent nodes and maintenance pauses, with a moved clock.

Every test runs on SQLite and on PostgreSQL (tests/coordinator/conftest.py).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from coordinator.domain.model import JobSpec, JobState, PauseChoice, TaskState
from coordinator.scheduler import Scheduler, expire_overdue
from coordinator.service import CoordinatorService
from coordinator.store.schema import ResultRow
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
COHORT = [DatasetSchema("cohort", {"age": "integer"})]
RELEASED = NodeOutput(Outcome.RELEASED, {"n": 40, "suppressed": False})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def move(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(store, clock):
    return CoordinatorService(store, clock=clock, offline_after_s=60)


def running_job(store, clock, nodes=("tre-a", "tre-b"), deadline_s=60, on_pause=PauseChoice.WAIT):
    spec = JobSpec("count", "cohort", {}, nodes, "default", deadline_s, on_pause)
    job = store.create_job(spec, "alice", clock())
    return store.approve_job(job.id, "bob", clock())


def task_of(job, node):
    return next(t for t in job.tasks if t.node == node)


def audit_events(store, event):
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT subject FROM audit_log WHERE event = :e"), {"e": event}
        ).all()
    return [r.subject for r in rows]


def test_each_task_gets_the_jobs_deadline_when_it_is_queued(store, clock):
    job = running_job(store, clock, deadline_s=90)

    assert {t.deadline_at for t in job.tasks} == {T0 + timedelta(seconds=90)}
    assert job.spec.deadline_s == 90


def test_an_overdue_task_times_out_and_the_job_completes_partial_with_the_reason(
    service, store, clock
):
    job = running_job(store, clock)
    service.record_result("tre-a", task_of(job, "tre-a").task_id, RELEASED)

    clock.move(59)
    assert expire_overdue(service, clock()).timed_out == ()
    assert store.get_job(job.id).state is JobState.RUNNING

    clock.move(2)
    expiry = expire_overdue(service, clock())

    done = store.get_job(job.id)
    assert expiry.timed_out == (task_of(job, "tre-b").task_id,)
    assert done.state is JobState.PARTIAL
    assert done.combined is not None and done.combined["n"] == 40
    late = task_of(done, "tre-b")
    assert late.state is TaskState.DONE
    assert late.output is not None and late.output.outcome is Outcome.FAILED
    assert "timed out" in late.output.error and "60 s" in late.output.error
    assert "tre-b" in done.reason and "timed out" in done.reason
    assert "tre-a" not in done.reason


def test_the_tick_is_idempotent(service, store, clock):
    job = running_job(store, clock)
    clock.move(120)

    first = expire_overdue(service, clock())
    second = expire_overdue(service, clock())

    assert len(first.timed_out) == 2 and second.timed_out == ()
    assert store.get_job(job.id).state is JobState.FAILED
    assert audit_events(store, "job.completed") == [f"job:{job.id}"]
    assert len(audit_events(store, "task.timed_out")) == 2


def test_concurrent_ticks_complete_a_job_once(service, store, clock):
    jobs = [running_job(store, clock) for _ in range(5)]
    clock.move(120)
    barrier = threading.Barrier(4)

    def tick():
        barrier.wait()
        expire_overdue(service, clock())

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    with store.engine.connect() as conn:
        results = conn.execute(sa.select(ResultRow.job_id)).scalars().all()
    assert sorted(results) == sorted(j.id for j in jobs)
    assert len(audit_events(store, "task.timed_out")) == 10


def test_a_report_after_the_deadline_changes_nothing(service, store, clock):
    job = running_job(store, clock, nodes=("tre-a",))
    clock.move(61)
    expire_overdue(service, clock())

    service.record_result("tre-a", task_of(job, "tre-a").task_id, RELEASED)

    done = store.get_job(job.id)
    assert done.state is JobState.FAILED
    assert task_of(done, "tre-a").output.outcome is Outcome.FAILED
    assert done.combined == {}


def test_held_tasks_wait_for_the_output_checker_past_the_deadline(service, store, clock):
    job = running_job(store, clock, nodes=("tre-a",))
    store.take_queued_tasks("tre-a", clock())
    held = NodeOutput(Outcome.HELD, {})
    service.record_result("tre-a", task_of(job, "tre-a").task_id, held)

    clock.move(3600)
    assert expire_overdue(service, clock()).timed_out == ()
    assert store.get_job(job.id).state is JobState.RUNNING


def test_a_silent_node_is_marked_offline_and_a_heartbeat_brings_it_back(service, store, clock):
    store.node_connected("tre-a", COHORT, ["count"], clock(), "conn-1")
    clock.move(30)
    service.node_seen("tre-a", "conn-1")

    clock.move(59)
    assert expire_overdue(service, clock()).offline == ()
    assert store.nodes()["tre-a"].online

    clock.move(2)
    assert expire_overdue(service, clock()).offline == ("tre-a",)
    node = store.nodes()["tre-a"]
    assert not node.online and node.last_seen == T0 + timedelta(seconds=30)
    assert expire_overdue(service, clock()).offline == ()

    service.node_seen("tre-a", "conn-old")  # a replaced stream's heartbeat counts for nothing
    assert not store.nodes()["tre-a"].online
    service.node_seen("tre-a", "conn-1")
    assert store.nodes()["tre-a"].online


def test_a_paused_node_gets_nothing_and_its_waiting_tasks_deadline_is_extended(
    service, store, clock
):
    store.node_connected("tre-a", COHORT, ["count"], clock(), "c1", paused=True)
    job = running_job(store, clock, nodes=("tre-a",), deadline_s=60)

    assert store.take_queued_tasks("tre-a", clock()) == []
    assert store.nodes()["tre-a"].paused
    clock.move(200)
    assert expire_overdue(service, clock()).timed_out == ()

    store.node_connected("tre-a", COHORT, ["count"], clock(), "c2", paused=False)

    resumed = store.get_job(job.id)
    assert task_of(resumed, "tre-a").deadline_at == T0 + timedelta(seconds=260)
    assert not store.nodes()["tre-a"].paused
    clock.move(59)
    assert expire_overdue(service, clock()).timed_out == ()
    assert [t.task_id for t, _ in store.take_queued_tasks("tre-a", clock())] == [
        task_of(job, "tre-a").task_id
    ]


def test_a_job_that_chose_partial_gives_up_a_paused_node_at_once(service, store, clock):
    store.node_connected("tre-b", COHORT, ["count"], clock(), "c1", paused=True)
    job = running_job(store, clock, on_pause=PauseChoice.PARTIAL)
    service.record_result("tre-a", task_of(job, "tre-a").task_id, RELEASED)

    expiry = expire_overdue(service, clock())

    done = store.get_job(job.id)
    assert expiry.timed_out == (task_of(job, "tre-b").task_id,)
    assert done.state is JobState.PARTIAL
    assert "paused for maintenance" in done.reason


def test_a_task_that_never_gets_an_answer_is_delivered_a_bounded_number_of_times(store, clock):
    service = CoordinatorService(store, clock=clock, max_deliveries=3)
    job = running_job(store, clock, nodes=("tre-a",))
    deliveries = 0
    for attempt in range(5):
        taken = store.take_queued_tasks("tre-a", clock())
        deliveries += len(taken)
        service.node_connected("tre-a", COHORT, ["count"], f"conn-{attempt}")

    done = store.get_job(job.id)
    assert deliveries == 3
    assert done.state is JobState.FAILED
    assert "3 times" in task_of(done, "tre-a").output.error
    assert store.take_queued_tasks("tre-a", clock()) == []


def test_the_scheduler_runs_the_tick_on_its_own(store):
    far = Clock()
    far.now = T0 + timedelta(days=1)
    service = CoordinatorService(store, clock=far)
    job = running_job(store, Clock(), nodes=("tre-a",))
    scheduler = Scheduler(service, interval=0.05)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while store.get_job(job.id).state is JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.stop()
    assert store.get_job(job.id).state is JobState.FAILED


def test_a_result_over_the_size_limit_is_recorded_as_failed_and_not_kept(store, clock):
    service = CoordinatorService(store, clock=clock, max_result_bytes=100)
    job = running_job(store, clock)
    service.record_result("tre-a", task_of(job, "tre-a").task_id, RELEASED)

    huge = NodeOutput(Outcome.RELEASED, {"n": 40, "padding": "x" * 500})
    service.record_result("tre-b", task_of(job, "tre-b").task_id, huge)

    done = store.get_job(job.id)
    too_big = task_of(done, "tre-b").output
    assert too_big is not None and too_big.outcome is Outcome.FAILED
    assert too_big.payload == {} and "limit of 100 bytes" in too_big.error
    assert done.state is JobState.PARTIAL and done.combined["n"] == 40


def test_a_node_never_has_more_than_max_in_flight_tasks_unanswered(store, clock):
    for _ in range(5):
        running_job(store, clock, nodes=("tre-a",))

    first = store.take_queued_tasks("tre-a", clock(), max_in_flight=2)
    assert len(first) == 2
    assert store.take_queued_tasks("tre-a", clock(), max_in_flight=2) == []

    store.record_result("tre-a", first[0][0].task_id, RELEASED, clock())

    assert len(store.take_queued_tasks("tre-a", clock(), max_in_flight=2)) == 1
    assert store.take_queued_tasks("tre-a", clock(), max_in_flight=2) == []
    assert len(store.take_queued_tasks("tre-a", clock())) == 2  # no cap: the rest


def test_agents_are_told_to_stop_delivered_tasks_that_timed_out(service, store, clock):
    job = running_job(store, clock)
    [(delivered, _)] = store.take_queued_tasks("tre-a", clock())
    told: list[tuple[str, str, str]] = []
    service.on_tasks_cancelled = told.extend

    clock.move(61)
    expire_overdue(service, clock())

    # tre-b's task was never delivered: nobody to tell
    assert told == [("tre-a", delivered.task_id, "the task timed out")]
    assert store.get_job(job.id).state is JobState.FAILED


def test_timeouts_and_cancellations_are_counted_in_the_metrics(service, store, clock):
    from fedtre.identity.peer import Identity

    running_job(store, clock)
    cancelled = running_job(store, clock, nodes=("tre-a",))
    service.approvals.check_visible = lambda viewer, job: None  # no governance in this test
    service.cancel(cancelled.id, Identity("alice", "researcher"), "not needed")
    clock.move(61)
    expire_overdue(service, clock())

    registry = service.metrics.registry
    assert registry.get_sample_value("fedtre_tasks_timed_out_total", {"node": "tre-b"}) == 1
    assert registry.get_sample_value("fedtre_tasks_timed_out_total", {"node": "tre-a"}) == 1
    finished = {"analysis": "count", "state": "cancelled"}
    assert registry.get_sample_value("fedtre_jobs_finished_total", finished) == 1


def test_stopping_does_not_hang_on_a_tick_stuck_on_the_database():
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        clock = staticmethod(lambda: T0)

        def expire_overdue(self, now):
            entered.set()
            release.wait(30)  # as a query to an unreachable database would

    scheduler = Scheduler(Stuck(), interval=60)  # type: ignore[arg-type]
    scheduler.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert scheduler.stop(timeout=0.2) is False
        assert time.monotonic() - started < 5
    finally:
        release.set()
