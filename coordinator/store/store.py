"""The coordinator's persistent state: the only module that talks SQL to it."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from coordinator.domain.model import Job, JobSpec, JobState, Node, Task, TaskState
from coordinator.domain.status import FAILURE_OUTCOMES, NetworkStatus, NodeQueue, TaskFailure
from coordinator.store import audit_log
from coordinator.store.audit_log import COORDINATOR
from coordinator.store.engine import create_engine
from coordinator.store.governance import GovernanceStore
from coordinator.store.rounds import RoundStore
from coordinator.store.schema import Base, JobRow, NodeRow, ProjectRow, ResultRow, TaskRow
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome, RuleResult
from fedtre.errors import Conflict, NotFound, PermissionDenied, Unavailable


class Store(RoundStore):
    """Jobs, tasks, nodes and results, in SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        try:
            Base.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise Unavailable(f"cannot open the coordinator database: {exc.orig}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite runs one writer at a time; queuing our own threads on a lock is far faster
        # than SQLite's busy handler, which sleeps in steps of milliseconds.
        self._sqlite_lock = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        # People, tokens, projects, approvals and the audit log (same database).
        self.governance = GovernanceStore(self)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sqlite_lock, self._sessions.begin() as session:
            yield session

    # -- nodes -------------------------------------------------------------------------

    def node_connected(
        self,
        node_id: str,
        datasets: Sequence[DatasetSchema],
        analyses: Sequence[str],
        now: datetime,
        connection_id: str = "",
    ) -> None:
        """Record a node's advertisement and put its undelivered-but-unreported tasks back in the queue."""
        with self._tx() as s:
            row = s.get(NodeRow, node_id) or NodeRow(node_id=node_id)
            row.online = True
            row.connection_id = connection_id
            row.last_seen = now
            row.datasets = [{"name": d.name, "columns": dict(d.columns)} for d in datasets]
            row.analyses = list(analyses)
            s.add(row)
            # A delivered task whose result never came may have been lost with the old
            # stream; deliver it again (the agent's task-id record makes this safe).
            requeued = s.execute(
                sa.update(TaskRow)
                .where(TaskRow.node == node_id, TaskRow.state == TaskState.DELIVERED.value)
                .values(state=TaskState.QUEUED.value, delivered_at=None, queued_at=now)
            ).rowcount
            audit_log.record(
                s, actor=node_id, event="node.connected", subject=f"node:{node_id}",
                details={"datasets": [d.name for d in datasets], "requeued": requeued}, now=now,
            )  # fmt: skip

    def node_disconnected(self, node_id: str, now: datetime, connection_id: str = "") -> None:
        """Mark the node offline, unless a newer stream (another connection_id) has replaced this one."""
        with self._tx() as s:
            marked = s.execute(
                sa.update(NodeRow)
                .where(NodeRow.node_id == node_id, NodeRow.connection_id == connection_id)
                .values(online=False, last_seen=now)
            ).rowcount
            if marked:
                audit_log.record(
                    s, actor=node_id, event="node.disconnected", subject=f"node:{node_id}",
                    now=now,
                )  # fmt: skip

    def requeue_tasks(self, task_ids: Sequence[str], now: datetime) -> None:
        """Put delivered tasks back in their queue (their stream ended before sending them)."""
        with self._tx() as s:
            requeued = s.execute(
                sa.update(TaskRow)
                .where(TaskRow.task_id.in_(task_ids), TaskRow.state == TaskState.DELIVERED.value)
                .values(state=TaskState.QUEUED.value, delivered_at=None, queued_at=now)
            ).rowcount
            if requeued:
                audit_log.record(
                    s, actor=COORDINATOR, event="task.requeued",
                    details={"tasks": list(task_ids)}, now=now,
                )  # fmt: skip

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
            audit_log.record(
                s, actor=submitted_by, event="job.submitted", subject=f"job:{row.id}",
                details={"project": spec.project, "analysis": spec.analysis,
                         "dataset": spec.dataset, "nodes": list(spec.nodes)},
                now=now,
            )  # fmt: skip
            return _job(row)

    def get_job(self, job_id: int) -> Job:
        with self._tx() as s:
            return _job(self._job_row(s, job_id))

    def list_jobs(
        self,
        state: JobState | None,
        limit: int,
        *,
        project: str | None = None,
        node: str | None = None,
        projects: Sequence[str] | None = None,
    ) -> list[Job]:
        """Return the newest limit jobs, optionally only those in state, project or addressed to node.

        projects, when given, limits the jobs to those projects (what a viewer may see).
        """
        with self._tx() as s:
            query = sa.select(JobRow).order_by(JobRow.id.desc()).limit(limit)
            if state is not None:
                query = query.where(JobRow.state == state.value)
            if project:
                query = query.where(JobRow.project == project)
            if projects is not None:
                query = query.where(JobRow.project.in_(list(projects)))
            if node:
                # nodes is a JSON list of ids: match one whole element, quotes included,
                # with LIKE's wildcards escaped (portable across SQLite and PostgreSQL).
                element = json.dumps(node)
                escaped = element.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                query = query.where(
                    sa.cast(JobRow.nodes, sa.Text).like(f"%{escaped}%", escape="\\")
                )
            return [_job(r) for r in s.scalars(query).all()]

    def approve_job(self, job_id: int, approver: str, now: datetime) -> Job:
        """Approve a pending job and queue one task per target node."""
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            _require_pending(row, "approve")
            row.state = JobState.RUNNING.value
            row.decided_by = approver
            row.decided_at = now
            row.updated_at = now
            for node in row.nodes:
                s.add(
                    TaskRow(
                        task_id=str(uuid.uuid4()),
                        job_id=row.id,
                        node=node,
                        state=TaskState.QUEUED.value,
                        queued_at=now,
                    )
                )
            s.flush()
            s.refresh(row)
            audit_log.record(
                s, actor=approver, event="job.approved", subject=f"job:{row.id}",
                details={"tasks": {t.node: t.task_id for t in row.tasks}}, now=now,
            )  # fmt: skip
            return _job(row)

    def reject_job(self, job_id: int, approver: str, reason: str, now: datetime) -> Job:
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            _require_pending(row, "reject")
            row.state = JobState.REJECTED.value
            row.decided_by = approver
            row.decided_at = now
            row.reason = reason
            row.updated_at = now
            audit_log.record(
                s, actor=approver, event="job.rejected", subject=f"job:{row.id}",
                details={"reason": reason}, now=now,
            )  # fmt: skip
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
                audit_log.record(
                    s, actor=COORDINATOR, event="task.dispatched", subject=f"task:{row.task_id}",
                    details={"job_id": row.job_id, "node": node_id}, now=now,
                )  # fmt: skip
            return taken

    def record_result(
        self, node_id: str, task_id: str, output: NodeOutput, now: datetime
    ) -> Job | None:
        """Store a node's output for its task, once; return the job if it now awaits completion.

        A repeated report of an already-recorded task changes nothing and returns None.
        """
        with self._tx() as s:
            found = s.get(TaskRow, task_id)
            if found is None:
                raise NotFound(f"no task '{task_id}'")
            if found.node != node_id:
                raise PermissionDenied(f"task '{task_id}' is not addressed to node '{node_id}'")
            # Lock the job, then read the task afresh: two reports of the same task (or the
            # last two of a job) then serialise here, on PostgreSQL as on SQLite.
            job = self._job_row(s, found.job_id, lock=True)
            task = s.scalars(
                sa.select(TaskRow)
                .where(TaskRow.task_id == task_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).one()
            if task.state == TaskState.DONE.value:
                return None  # a final report is never overwritten
            # HELD: the node's output checker has it; the job waits for the final report,
            # which replaces this one exactly once.
            held = output.outcome is Outcome.HELD
            task.state = (TaskState.HELD if held else TaskState.DONE).value
            task.reported_at = now
            task.outcome = output.outcome.value
            task.payload = output.payload
            task.rules = [
                {"rule": r.rule, "passed": r.passed, "detail": r.detail} for r in output.rules
            ]
            task.error = output.error
            s.flush()
            audit_log.record(
                s, actor=node_id, event="task.reported", subject=f"task:{task_id}",
                details={"job_id": task.job_id, "outcome": output.outcome.value,
                         "error": output.error[:500]},
                now=now,
            )  # fmt: skip
            if held or job.state != JobState.RUNNING.value:
                return None
            if any(t.state != TaskState.DONE.value for t in job.tasks):
                return None
            s.refresh(job)
            return _job(job)

    def complete_job(
        self, job_id: int, state: JobState, combined: dict, now: datetime
    ) -> Job | None:
        """Move a running job to its final state with its combined result.

        Returns None, changing nothing, when the job is no longer running (completed once already).
        """
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            if row.state != JobState.RUNNING.value:
                return None
            row.state = state.value
            row.updated_at = now
            s.add(ResultRow(job_id=job_id, combined=combined, created_at=now))
            audit_log.record(
                s, actor=COORDINATOR, event="job.completed", subject=f"job:{job_id}",
                details={"state": state.value}, now=now,
            )  # fmt: skip
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

    # -- operations (read-only) ---------------------------------------------------------

    def ping(self) -> None:
        """Return when the database answers a query on the coordinator's tables; raise Unavailable."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.select(JobRow.id).limit(1)).all()
        except SQLAlchemyError as exc:
            raise Unavailable(
                f"the coordinator database does not answer ({type(exc).__name__})"
            ) from exc

    def network_status(self, recent_failures: int = 10) -> NetworkStatus:
        """Return nodes with their queues, jobs by state, and the latest failed or refused tasks."""
        with self._tx() as s:
            node_rows = s.scalars(sa.select(NodeRow).order_by(NodeRow.node_id)).all()
            jobs = dict(
                s.execute(sa.select(JobRow.state, sa.func.count()).group_by(JobRow.state)).all()
            )
            tasks = s.execute(
                sa.select(
                    TaskRow.node,
                    TaskRow.state,
                    sa.func.count(),
                    sa.func.min(TaskRow.queued_at),
                    sa.func.min(TaskRow.delivered_at),
                ).group_by(TaskRow.node, TaskRow.state)
            ).all()
            failures = s.execute(
                sa.select(TaskRow, JobRow.analysis)
                .join(JobRow, TaskRow.job_id == JobRow.id)
                .where(TaskRow.outcome.in_([o.value for o in FAILURE_OUTCOMES]))
                .order_by(TaskRow.reported_at.desc(), TaskRow.task_id)
                .limit(recent_failures)
            ).all()
        known = {row.node_id: row for row in node_rows}
        counts: dict[tuple[str, TaskState], int] = {}
        oldest: dict[tuple[str, TaskState], datetime | None] = {}
        for node, state, count, min_queued, min_delivered in tasks:
            key = (node, TaskState(state))
            counts[key] = count
            oldest[key] = _utc(min_queued if key[1] is TaskState.QUEUED else min_delivered)
        node_ids = sorted(set(known) | {node for node, _ in counts})
        for node in node_ids:
            for state in TaskState:
                counts.setdefault((node, state), 0)
        return NetworkStatus(
            nodes=tuple(
                NodeQueue(
                    node_id=node,
                    online=bool(known[node].online) if node in known else False,
                    last_seen=_utc(known[node].last_seen) if node in known else None,
                    queued=counts[(node, TaskState.QUEUED)],
                    delivered=counts[(node, TaskState.DELIVERED)],
                    oldest_queued_at=oldest.get((node, TaskState.QUEUED)),
                    oldest_delivered_at=oldest.get((node, TaskState.DELIVERED)),
                )
                for node in node_ids
            ),
            jobs_by_state={state: jobs.get(state.value, 0) for state in JobState},
            tasks_by_node_state=counts,
            recent_failures=tuple(
                TaskFailure(
                    task_id=task.task_id,
                    job_id=task.job_id,
                    node=task.node,
                    analysis=analysis,
                    outcome=Outcome(str(task.outcome)),  # filtered to failure outcomes
                    error=task.error,
                    reported_at=_utc(task.reported_at),
                )
                for task, analysis in failures
            ),
        )

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
    return Task(
        row.task_id,
        row.job_id,
        row.node,
        TaskState(row.state),
        output,
        _utc(row.queued_at),
        round=row.round_no or 1,
    )


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
        # Only the current round's tasks: earlier rounds' are history (coordinator.store.rounds).
        tasks=tuple(_task(t) for t in row.tasks if (t.round_no or 1) == (row.round_no or 1))
        if with_tasks
        else (),
        combined=row.result.combined if with_tasks and row.result is not None else None,
        decided_at=_utc(row.decided_at),
        round=row.round_no or 1,
        round_state=row.round_state,
    )
