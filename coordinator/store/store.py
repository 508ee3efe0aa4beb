"""The coordinator's persistent state: the only module that talks SQL to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from coordinator.domain.model import Job, JobSpec, JobState, Node, Task, TaskState
from coordinator.store.engine import create_engine
from coordinator.store.schema import Base, JobRow, NodeRow, ProjectRow, ResultRow, TaskRow
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome, RuleResult
from fedtre.errors import Conflict, NotFound, PermissionDenied, Unavailable


class Store:
    """Jobs, tasks, nodes and results, in SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        try:
            Base.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise Unavailable(f"cannot open the coordinator database: {exc.orig}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- nodes -------------------------------------------------------------------------

    def node_connected(
        self,
        node_id: str,
        datasets: Sequence[DatasetSchema],
        analyses: Sequence[str],
        now: datetime,
    ) -> None:
        """Record a node's advertisement and put its undelivered-but-unreported tasks back in the queue."""
        with self._tx() as s:
            row = s.get(NodeRow, node_id) or NodeRow(node_id=node_id)
            row.online = True
            row.last_seen = now
            row.datasets = [{"name": d.name, "columns": dict(d.columns)} for d in datasets]
            row.analyses = list(analyses)
            s.add(row)
            # A delivered task whose result never came may have been lost with the old
            # stream; deliver it again (the agent's task-id record makes this safe).
            s.execute(
                sa.update(TaskRow)
                .where(TaskRow.node == node_id, TaskRow.state == TaskState.DELIVERED.value)
                .values(state=TaskState.QUEUED.value, delivered_at=None)
            )

    def node_disconnected(self, node_id: str, now: datetime) -> None:
        with self._tx() as s:
            row = s.get(NodeRow, node_id)
            if row is not None:
                row.online = False
                row.last_seen = now

    def nodes(self) -> dict[str, Node]:
        with self._tx() as s:
            rows = s.scalars(sa.select(NodeRow).order_by(NodeRow.node_id)).all()
            return {r.node_id: _node(r) for r in rows}

    # -- jobs --------------------------------------------------------------------------

    def create_job(self, spec: JobSpec, submitted_by: str, now: datetime) -> Job:
        with self._tx() as s:
            if s.get(ProjectRow, spec.project) is None:
                s.add(ProjectRow(name=spec.project, created_at=now))
                s.flush()
            row = JobRow(
                project=spec.project,
                analysis=spec.analysis,
                dataset=spec.dataset,
                params=spec.params,
                nodes=list(spec.nodes),
                state=JobState.PENDING_APPROVAL.value,
                submitted_by=submitted_by,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            return _job(row)

    def get_job(self, job_id: int) -> Job:
        with self._tx() as s:
            return _job(self._job_row(s, job_id))

    def list_jobs(self, state: JobState | None, limit: int) -> list[Job]:
        with self._tx() as s:
            query = sa.select(JobRow).order_by(JobRow.id.desc()).limit(limit)
            if state is not None:
                query = query.where(JobRow.state == state.value)
            return [_job(r) for r in s.scalars(query).all()]

    def approve_job(self, job_id: int, approver: str, now: datetime) -> Job:
        """Approve a pending job and queue one task per target node."""
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            _require_pending(row, "approve")
            row.state = JobState.RUNNING.value
            row.decided_by = approver
            row.updated_at = now
            for node in row.nodes:
                s.add(
                    TaskRow(
                        task_id=str(uuid.uuid4()),
                        job_id=row.id,
                        node=node,
                        state=TaskState.QUEUED.value,
                    )
                )
            s.flush()
            s.refresh(row)
            return _job(row)

    def reject_job(self, job_id: int, approver: str, reason: str, now: datetime) -> Job:
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            _require_pending(row, "reject")
            row.state = JobState.REJECTED.value
            row.decided_by = approver
            row.reason = reason
            row.updated_at = now
            return _job(row)

    # -- tasks -------------------------------------------------------------------------

    def take_queued_tasks(
        self, node_id: str, now: datetime, limit: int = 100
    ) -> list[tuple[Task, Job]]:
        """Mark up to limit of a node's queued tasks delivered and return them with their jobs."""
        with self._tx() as s:
            rows = s.scalars(
                sa.select(TaskRow)
                .where(TaskRow.node == node_id, TaskRow.state == TaskState.QUEUED.value)
                .order_by(TaskRow.job_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            taken = []
            for row in rows:
                row.state = TaskState.DELIVERED.value
                row.delivered_at = now
                taken.append((_task(row), _job(row.job, with_tasks=False)))
            return taken

    def record_result(
        self, node_id: str, task_id: str, output: NodeOutput, now: datetime
    ) -> Job | None:
        """Store a node's output for its task, once; return the job if it now awaits completion.

        A repeated report of an already-recorded task changes nothing and returns None.
        """
        with self._tx() as s:
            task = s.get(TaskRow, task_id)
            if task is None:
                raise NotFound(f"no task '{task_id}'")
            if task.node != node_id:
                raise PermissionDenied(f"task '{task_id}' is not addressed to node '{node_id}'")
            job = self._job_row(s, task.job_id, lock=True)
            if task.state == TaskState.DONE.value:
                return None
            task.state = TaskState.DONE.value
            task.reported_at = now
            task.outcome = output.outcome.value
            task.payload = output.payload
            task.rules = [
                {"rule": r.rule, "passed": r.passed, "detail": r.detail} for r in output.rules
            ]
            task.error = output.error
            s.flush()
            if job.state != JobState.RUNNING.value:
                return None
            if any(t.state != TaskState.DONE.value for t in job.tasks):
                return None
            s.refresh(job)
            return _job(job)

    def complete_job(self, job_id: int, state: JobState, combined: dict, now: datetime) -> Job:
        """Move a running job to its final state with its combined result (once)."""
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            if row.state != JobState.RUNNING.value:
                raise Conflict(f"job {job_id} is {row.state}, not running")
            row.state = state.value
            row.updated_at = now
            s.add(ResultRow(job_id=job_id, combined=combined, created_at=now))
            s.flush()
            s.refresh(row)
            return _job(row)

    def jobs_awaiting_completion(self) -> list[Job]:
        """Running jobs whose every task is done (left so by a crash between the two steps)."""
        with self._tx() as s:
            pending = sa.exists().where(
                TaskRow.job_id == JobRow.id, TaskRow.state != TaskState.DONE.value
            )
            rows = s.scalars(
                sa.select(JobRow).where(JobRow.state == JobState.RUNNING.value, ~pending)
            ).all()
            return [_job(r) for r in rows]

    @staticmethod
    def _job_row(s: Session, job_id: int, lock: bool = False) -> JobRow:
        query = sa.select(JobRow).where(JobRow.id == job_id)
        if lock:
            query = query.with_for_update()
        row = s.scalars(query).one_or_none()
        if row is None:
            raise NotFound(f"no job {job_id}; `fedtre jobs list` shows the jobs you can see")
        return row


def _require_pending(row: JobRow, verb: str) -> None:
    if row.state != JobState.PENDING_APPROVAL.value:
        raise Conflict(f"cannot {verb} job {row.id}: it is {row.state}, not pending approval")


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _node(row: NodeRow) -> Node:
    datasets = tuple(DatasetSchema(d["name"], dict(d["columns"])) for d in row.datasets or [])
    return Node(
        row.node_id, bool(row.online), _utc(row.last_seen), datasets, tuple(row.analyses or [])
    )


def _task(row: TaskRow) -> Task:
    output = None
    if row.outcome is not None:
        output = NodeOutput(
            outcome=Outcome(row.outcome),
            payload=row.payload or {},
            rules=tuple(RuleResult(r["rule"], r["passed"], r["detail"]) for r in row.rules or []),
            error=row.error,
        )
    return Task(row.task_id, row.job_id, row.node, TaskState(row.state), output)


def _job(row: JobRow, with_tasks: bool = True) -> Job:
    spec = JobSpec(row.analysis, row.dataset, dict(row.params), tuple(row.nodes), row.project)
    return Job(
        id=row.id,
        spec=spec,
        state=JobState(row.state),
        submitted_by=row.submitted_by,
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
        decided_by=row.decided_by,
        reason=row.reason,
        tasks=tuple(_task(t) for t in row.tasks) if with_tasks else (),
        combined=row.result.combined if with_tasks and row.result is not None else None,
    )
