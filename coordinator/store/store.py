"""The coordinator's persistent state: the only module that talks SQL to it."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, lazyload, selectinload, sessionmaker

from coordinator.domain.model import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_DELIVERIES,
    Job,
    JobSpec,
    JobState,
    Node,
    PauseChoice,
    Task,
    TaskState,
)
from coordinator.domain.status import FAILURE_OUTCOMES, NetworkStatus, NodeQueue, TaskFailure
from coordinator.store import audit_log, migrate
from coordinator.store.audit_log import COORDINATOR
from coordinator.store.engine import READ_ONLY, create_engine
from coordinator.store.governance import GovernanceStore
from coordinator.store.rounds import RoundStore
from coordinator.store.schema import JobRow, NodeRow, ProjectRow, ResultRow, TaskRow
from fedtre import audit
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome, RuleResult
from fedtre.catalogue.description import ColumnDescription, DatasetDescription
from fedtre.errors import Conflict, FedtreError, NotFound, PermissionDenied, Unavailable

# Tasks a node still owes an answer for (a HELD task awaits the TRE's output checker, a
# person: its deadline does not apply).
_UNANSWERED = (TaskState.QUEUED.value, TaskState.DELIVERED.value)


@dataclass(frozen=True)
class Expiry:
    """What one scheduler tick changed: tasks timed out, jobs left to complete, nodes gone offline."""

    timed_out: tuple[str, ...] = ()
    jobs: tuple[Job, ...] = ()
    offline: tuple[str, ...] = ()
    # (node, task id) of the timed-out tasks that had been delivered: agents to tell to stop.
    delivered: tuple[tuple[str, str], ...] = ()
    # The node of each timed-out task, in the order of timed_out.
    timed_out_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cancellation:
    """A cancelled job and the (node, task id) pairs agents may be running."""

    job: Job
    running: tuple[tuple[str, str], ...] = field(default_factory=tuple)


class Store(RoundStore):
    """Jobs, tasks, nodes and results, in SQLite or PostgreSQL."""

    def __init__(self, url: str, replica: str = "") -> None:
        """replica: this coordinator's name among several, recorded with each dispatch."""
        self.engine = create_engine(url)
        self.replica = replica
        try:
            migrate.prepare(self.engine)  # new: created at the newest revision; old: refused
        except OperationalError as exc:
            raise Unavailable(f"cannot open the coordinator database: {exc.orig}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        # SQLite runs one writer at a time; queuing our own threads on a lock is far faster
        # than SQLite's busy handler, which sleeps in steps of milliseconds.
        self._sqlite_lock = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        # The session of this thread's atomic() block, if it is in one.
        self._atomic = threading.local()
        # People, tokens, projects, approvals and the audit log (same database).
        self.governance = GovernanceStore(self)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        session = getattr(self._atomic, "session", None)
        if session is not None:  # inside atomic(): part of its one transaction
            yield session
            return
        with self._sqlite_lock, self._sessions.begin() as session:
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it neither takes the store's lock nor
        SQLite's write lock, so reads go on beside the writer (WAL snapshots)."""
        session = getattr(self._atomic, "session", None)
        if session is not None:  # inside atomic(): read what it has written
            yield session
            return
        with self._read_sessions.begin() as session:
            yield session

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Run this thread's store calls inside as one transaction: all committed, or none.

        One commit (one fsync) instead of one per call. Nothing in it may wait on another
        thread's transaction, and an error raised inside rolls back every call made in it.
        """
        if getattr(self._atomic, "session", None) is not None:
            yield  # already inside one
            return
        with self._sqlite_lock, self._sessions.begin() as session:
            self._atomic.session = session
            try:
                yield
            finally:
                self._atomic.session = None

    # -- nodes -------------------------------------------------------------------------

    def node_connected(
        self,
        node_id: str,
        datasets: Sequence[DatasetSchema],
        analyses: Sequence[str],
        now: datetime,
        connection_id: str = "",
        *,
        paused: bool = False,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        agent_version: str = "",
        certificate_not_after: datetime | None = None,
    ) -> list[Job]:
        """Record a node's advertisement and put its delivered-but-unreported tasks back in the queue.

        paused: the TRE paused the agent for maintenance; nothing is delivered until it
        connects unpaused, and then the deadlines of tasks that waited for it are extended
        by the pause. A task already delivered max_deliveries times is failed instead of
        requeued. Returns the jobs that this left with every task done (to complete).
        """
        with self._tx() as s:
            row = s.get(NodeRow, node_id) or NodeRow(node_id=node_id)
            was_paused, paused_since = bool(row.paused), _utc(row.paused_since)
            row.online = True
            row.connection_id = connection_id
            row.last_seen = now
            row.datasets = [
                {
                    "name": d.name,
                    "columns": dict(d.columns),
                    "grids": dict(d.grids),
                    "description": d.description.to_json() if d.description else None,
                    "column_descriptions": {
                        c: about.to_json() for c, about in d.column_descriptions.items()
                    },
                }
                for d in datasets
            ]
            row.analyses = list(analyses)
            row.agent_version = agent_version[:64]
            row.certificate_not_after = certificate_not_after
            row.paused = paused
            if paused and not was_paused:
                row.paused_since = now
            elif not paused:
                row.paused_since = None
            s.add(row)
            if was_paused and not paused and paused_since is not None:
                self._extend_deadlines(s, node_id, now - paused_since)
            # A delivered task whose result never came may have been lost with the old
            # stream; deliver it again (the agent's task-id record makes this safe), but
            # not without end: a task that keeps its agent from answering fails.
            delivered = s.scalars(
                sa.select(TaskRow)
                .where(TaskRow.node == node_id, TaskRow.state == TaskState.DELIVERED.value)
                .order_by(TaskRow.task_id)
                .with_for_update()
            ).all()
            requeued, given_up = 0, []
            for task in delivered:
                if (task.deliveries or 0) >= max_deliveries:
                    _give_up(
                        task, now,
                        f"node '{node_id}' was sent this task {task.deliveries} times without "
                        "answering; it is not sent again",
                    )  # fmt: skip
                    given_up.append(task)
                else:
                    task.state, task.delivered_at, task.queued_at = (
                        TaskState.QUEUED.value,
                        None,
                        now,
                    )
                    requeued += 1
            audit_log.record(
                s, actor=node_id, event="node.connected", subject=f"node:{node_id}",
                details={"datasets": [d.name for d in datasets], "requeued": requeued,
                         "paused": paused},
                now=now,
            )  # fmt: skip
            for task in given_up:
                audit_log.record(
                    s, actor=COORDINATOR, event="task.given_up", subject=f"task:{task.task_id}",
                    details={"job_id": task.job_id, "node": node_id,
                             "deliveries": task.deliveries},
                    now=now,
                )  # fmt: skip
            s.flush()
            return self._completable(s, {t.job_id for t in given_up})

    @staticmethod
    def _extend_deadlines(s: Session, node_id: str, pause: timedelta) -> None:
        """Give a resumed node's waiting tasks (of jobs that wait for it) the time it was paused."""
        waiting = s.scalars(
            sa.select(TaskRow)
            .join(JobRow, TaskRow.job_id == JobRow.id)
            .where(
                TaskRow.node == node_id,
                TaskRow.state.in_(_UNANSWERED),
                TaskRow.deadline_at.is_not(None),
                JobRow.state == JobState.RUNNING.value,
                JobRow.on_pause == PauseChoice.WAIT.value,
            )
        ).all()
        for task in waiting:
            deadline = _utc(task.deadline_at)
            if deadline is not None:
                task.deadline_at = deadline + pause

    def _completable(self, s: Session, job_ids: set[int]) -> list[Job]:
        """Of job_ids, the running jobs whose current round's tasks are all done."""
        if not job_ids:
            return []
        rows = s.scalars(
            sa.select(JobRow)
            .where(JobRow.id.in_(sorted(job_ids)), JobRow.state == JobState.RUNNING.value)
            .execution_options(populate_existing=True)
        ).all()
        done = []
        for row in rows:
            current = [t for t in row.tasks if (t.round_no or 1) == (row.round_no or 1)]
            if all(t.state == TaskState.DONE.value for t in current):
                done.append(_job(row))
        return done

    def node_seen(self, node_id: str, connection_id: str, now: datetime) -> None:
        """A heartbeat of node's open stream: it is online, last seen now."""
        with self._tx() as s:
            s.execute(
                sa.update(NodeRow)
                .where(NodeRow.node_id == node_id, NodeRow.connection_id == connection_id)
                .values(online=True, last_seen=now)
            )

    def node_disconnected(self, node_id: str, now: datetime, connection_id: str = "") -> None:
        """Mark the node offline, unless a newer stream (another connection_id) has replaced this one."""
        with self._tx() as s:
            marked = s.execute(
                sa.update(NodeRow)
                .where(NodeRow.node_id == node_id, NodeRow.connection_id == connection_id)
                .values(online=False, last_seen=now)
            ).rowcount  # type: ignore[attr-defined]
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
            ).rowcount  # type: ignore[attr-defined]
            if requeued:
                audit_log.record(
                    s, actor=COORDINATOR, event="task.requeued",
                    details={"tasks": list(task_ids)}, now=now,
                )  # fmt: skip

    def nodes(self) -> dict[str, Node]:
        with self._read() as s:
            rows = s.scalars(sa.select(NodeRow).order_by(NodeRow.node_id)).all()
            return {r.node_id: _node(r) for r in rows}

    # -- jobs --------------------------------------------------------------------------

    def create_job(
        self, spec: JobSpec, submitted_by: str, now: datetime, *, request_id: str = ""
    ) -> Job:
        """Create a pending job; raise Conflict when submitted_by already used request_id."""
        try:
            return self._create_job(spec, submitted_by, now, request_id)
        except IntegrityError as exc:
            raise Conflict(
                f"request id {request_id!r} was already used for another job; "
                "retry with the same request to get that job"
            ) from exc

    def job_by_request(self, submitted_by: str, request_id: str) -> Job | None:
        """The job submitted_by created with idempotency key request_id, if any."""
        if not request_id:
            return None
        with self._read() as s:
            row = s.scalars(
                sa.select(JobRow).where(
                    JobRow.submitted_by == submitted_by, JobRow.request_id == request_id
                )
            ).one_or_none()
            return None if row is None else _job(row)

    def _create_job(self, spec: JobSpec, submitted_by: str, now: datetime, request_id: str) -> Job:
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
                deadline_s=spec.deadline_s,
                on_pause=spec.on_pause.value,
                request_id=request_id or None,
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
        with self._read() as s:
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
        with self._read() as s:
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
                        deadline_at=now + timedelta(seconds=row.deadline_s or DEFAULT_DEADLINE_S),
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
        self, node_id: str, now: datetime, limit: int = 100, *, max_in_flight: int | None = None
    ) -> list[tuple[Task, Job]]:
        """Mark up to limit of a node's queued tasks delivered and return them with their jobs.

        A node paused for maintenance gets nothing; with max_in_flight, a node never has
        more than that many delivered tasks unanswered (backpressure).
        """
        return self.take_queued_tasks_for([node_id], now, limit, max_in_flight=max_in_flight)[
            node_id
        ]

    def take_queued_tasks_for(
        self,
        node_ids: Sequence[str],
        now: datetime,
        limit: int = 100,
        *,
        max_in_flight: int | None = None,
    ) -> dict[str, list[tuple[Task, Job]]]:
        """take_queued_tasks for several nodes in one transaction: per node, its tasks.

        A few statements for all the nodes together, not a few per node: a job fanned
        out to 1,000 nodes is dispatched in a handful of batches.
        """
        taken: dict[str, list[tuple[Task, Job]]] = {node: [] for node in node_ids}
        with self._tx() as s:
            room = self._room(s, node_ids, limit, max_in_flight)
            if not room:
                return taken
            # Each node's oldest queued tasks, as many as it has room for; then those of
            # them no other transaction holds (another replica's dispatch) are locked.
            ranked = (
                sa.select(
                    TaskRow.task_id,
                    TaskRow.node,
                    sa.func.row_number()
                    .over(partition_by=TaskRow.node, order_by=(TaskRow.job_id, TaskRow.task_id))
                    .label("rank"),
                )
                .where(TaskRow.node.in_(room), TaskRow.state == TaskState.QUEUED.value)
                .subquery()
            )
            candidates = [
                task_id
                for task_id, node, rank in s.execute(
                    sa.select(ranked.c.task_id, ranked.c.node, ranked.c.rank).where(
                        ranked.c.rank <= max(room.values())
                    )
                )
                if rank <= room[node]
            ]
            if not candidates:
                return taken
            rows = s.scalars(
                sa.select(TaskRow)
                .where(TaskRow.task_id.in_(candidates), TaskRow.state == TaskState.QUEUED.value)
                .order_by(TaskRow.node, TaskRow.job_id, TaskRow.task_id)
                .with_for_update(skip_locked=True)
            ).all()
            # The jobs without their tasks: a job fanned out to many nodes would otherwise
            # load every sibling task for each node's delivery.
            jobs = {
                job.id: _job(job, with_tasks=False)
                for job in s.scalars(
                    sa.select(JobRow)
                    .where(JobRow.id.in_({row.job_id for row in rows}))
                    .options(lazyload(JobRow.tasks), lazyload(JobRow.result))
                )
            }
            replica = {"replica": self.replica} if self.replica else {}
            for row in rows:
                row.state = TaskState.DELIVERED.value
                row.delivered_at = now
                row.deliveries = (row.deliveries or 0) + 1
                taken[row.node].append((_task(row), jobs[row.job_id]))
            audit_log.record_many(
                s,
                [
                    audit.NewEntry(
                        actor=COORDINATOR,
                        event="task.dispatched",
                        subject=f"task:{row.task_id}",
                        details={"job_id": row.job_id, "node": row.node, **replica},
                    )  # fmt: skip
                    for row in rows
                ],
                now,
            )
            return taken

    @staticmethod
    def _room(
        s: Session, node_ids: Sequence[str], limit: int, max_in_flight: int | None
    ) -> dict[str, int]:
        """How many tasks each of node_ids may be sent now (paused and full nodes: none)."""
        paused = set(
            s.scalars(
                sa.select(NodeRow.node_id).where(NodeRow.node_id.in_(node_ids), NodeRow.paused)
            )
        )
        room = {node: limit for node in node_ids if node not in paused}
        if max_in_flight is not None and room:
            in_flight = {
                node: int(count)
                for node, count in s.execute(
                    sa.select(TaskRow.node, sa.func.count())
                    .where(TaskRow.node.in_(room), TaskRow.state == TaskState.DELIVERED.value)
                    .group_by(TaskRow.node)
                )
            }
            room = {node: min(limit, max_in_flight - in_flight.get(node, 0)) for node in room}
        return {node: n for node, n in room.items() if n > 0}

    def record_result(
        self, node_id: str, task_id: str, output: NodeOutput, now: datetime
    ) -> Job | None:
        """Store a node's output for its task, once; return the job if it now awaits completion.

        A repeated report of an already-recorded task changes nothing and returns None.
        Raises NotFound (no such task) or PermissionDenied (another node's task).
        """
        result = self.record_results([(node_id, task_id, output)], now)[0]
        if isinstance(result, FedtreError):
            raise result
        return result

    def record_results(
        self, reports: Sequence[tuple[str, str, NodeOutput]], now: datetime
    ) -> list[Job | None | FedtreError]:
        """record_result for several (node, task id, output) reports in one transaction.

        Per report: the job it was the last outstanding report of, None, or the error that
        refused it alone (nothing of a refused report is written). A few statements for
        the whole batch, not a few per report.
        """
        answers: list[Job | None | FedtreError] = [None] * len(reports)
        with self._tx() as s:
            found = {
                row.task_id: row
                for row in s.scalars(
                    sa.select(TaskRow).where(TaskRow.task_id.in_({t for _, t, _ in reports}))
                )
            }
            accepted = []
            for i, (node_id, task_id, _) in enumerate(reports):
                task = found.get(task_id)
                if task is None:
                    answers[i] = NotFound(f"no task '{task_id}'")
                elif task.node != node_id:
                    answers[i] = PermissionDenied(
                        f"task '{task_id}' is not addressed to node '{node_id}'"
                    )
                else:
                    accepted.append(i)
            if not accepted:
                return answers
            # Lock the jobs (in id order, so concurrent batches cannot deadlock), then read
            # the tasks afresh: two reports of one task, or the last two of a job, then
            # serialise here, on PostgreSQL as on SQLite.
            jobs = {
                row.id: row
                for row in s.scalars(
                    sa.select(JobRow)
                    .where(JobRow.id.in_({found[reports[i][1]].job_id for i in accepted}))
                    .order_by(JobRow.id)
                    .options(lazyload(JobRow.tasks), lazyload(JobRow.result))
                    .with_for_update()
                )
            }
            tasks = {
                row.task_id: row
                for row in s.scalars(
                    sa.select(TaskRow)
                    .where(TaskRow.task_id.in_({reports[i][1] for i in accepted}))
                    .order_by(TaskRow.task_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
            }
            entries = []
            last_of_job: dict[int, int] = {}  # job id -> the index of its last final report
            for i in accepted:
                node_id, task_id, output = reports[i]
                task = tasks[task_id]
                if task.state == TaskState.DONE.value:
                    continue  # a final report is never overwritten
                # HELD: the node's output checker has it; the job waits for the final
                # report, which replaces this one exactly once.
                held = output.outcome is Outcome.HELD
                task.state = (TaskState.HELD if held else TaskState.DONE).value
                task.reported_at = now
                task.outcome = output.outcome.value
                task.payload = output.payload
                task.rules = [
                    {"rule": r.rule, "passed": r.passed, "detail": r.detail, "setting": r.setting}
                    for r in output.rules
                ]
                task.error = output.error
                entries.append(
                    audit.NewEntry(
                        actor=node_id,
                        event="task.reported",
                        subject=f"task:{task_id}",
                        details={
                            "job_id": task.job_id,
                            "outcome": output.outcome.value,
                            "error": output.error[:500],
                        },
                    )  # fmt: skip
                )
                if not held and jobs[task.job_id].state == JobState.RUNNING.value:
                    last_of_job[task.job_id] = i
            s.flush()
            audit_log.record_many(s, entries, now)
            if not last_of_job:
                return answers
            unfinished = {
                job_id: int(count)
                for job_id, count in s.execute(
                    sa.select(TaskRow.job_id, sa.func.count())
                    .where(TaskRow.job_id.in_(last_of_job), TaskRow.state != TaskState.DONE.value)
                    .group_by(TaskRow.job_id)
                )
            }
            for job_id, i in last_of_job.items():
                if not unfinished.get(job_id):
                    answers[i] = _job(self._job_row(s, job_id))
            return answers

    def complete_job(
        self, job_id: int, state: JobState, combined: dict, now: datetime, reason: str = ""
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
            if reason:
                row.reason = reason
            s.add(ResultRow(job_id=job_id, combined=combined, created_at=now))
            audit_log.record(
                s, actor=COORDINATOR, event="job.completed", subject=f"job:{job_id}",
                details={"state": state.value}, now=now,
            )  # fmt: skip
            s.flush()
            s.refresh(row)
            return _job(row)

    # -- time: deadlines, offline nodes, cancellation --------------------------------------

    def expire_overdue(self, now: datetime, *, offline_before: datetime | None = None) -> Expiry:
        """Time out the unanswered tasks of running jobs whose deadline has passed; idempotent.

        Tasks for a node paused for maintenance do not time out while it is paused when
        their job waits for it; when their job chose partial, they are given up at once.
        With offline_before, online nodes last seen before it are marked offline.
        Returns what changed, with the jobs left with every task done (to complete).
        """
        with self._tx() as s:
            paused = set(s.scalars(sa.select(NodeRow.node_id).where(NodeRow.paused)).all())
            unanswered = (
                sa.select(TaskRow.task_id, TaskRow.job_id, TaskRow.node, JobRow.on_pause)
                .join(JobRow, TaskRow.job_id == JobRow.id)
                .where(
                    JobRow.state == JobState.RUNNING.value,
                    TaskRow.state.in_(_UNANSWERED),
                    TaskRow.round_no == JobRow.round_no,
                )
            )
            overdue = list(s.execute(unanswered.where(TaskRow.deadline_at <= now)).all())
            if paused:
                overdue += s.execute(
                    unanswered.where(
                        TaskRow.node.in_(sorted(paused)),
                        JobRow.on_pause == PauseChoice.PARTIAL.value,
                    )
                ).all()
            due: dict[int, set[str]] = {}
            for task_id, job_id, node, on_pause in overdue:
                if node in paused and on_pause == PauseChoice.WAIT.value:
                    continue  # the deadline stands still while the TRE's agent is paused
                due.setdefault(job_id, set()).add(task_id)
            timed_out: list[str] = []
            timed_out_nodes: list[str] = []
            delivered: list[tuple[str, str]] = []
            # Job first, then its tasks: the lock order of record_result.
            for job_id in sorted(due):
                job = self._job_row(s, job_id, lock=True)
                if job.state != JobState.RUNNING.value:
                    continue
                tasks = s.scalars(
                    sa.select(TaskRow)
                    .where(TaskRow.task_id.in_(sorted(due[job_id])), TaskRow.state.in_(_UNANSWERED))
                    .with_for_update()
                    .execution_options(populate_existing=True)
                ).all()
                for task in tasks:
                    if task.node in paused:
                        reason = (
                            f"node '{task.node}' is paused for maintenance by its TRE; "
                            "this job chose to finish without it"
                        )
                    else:
                        reason = (
                            f"timed out: node '{task.node}' did not answer within the job's "
                            f"deadline of {job.deadline_s} s"
                        )
                    if task.state == TaskState.DELIVERED.value:
                        delivered.append((task.node, task.task_id))
                    _give_up(task, now, reason)
                    timed_out.append(task.task_id)
                    timed_out_nodes.append(task.node)
                    audit_log.record(
                        s, actor=COORDINATOR, event="task.timed_out",
                        subject=f"task:{task.task_id}",
                        details={"job_id": job_id, "node": task.node, "reason": reason}, now=now,
                    )  # fmt: skip
            offline: list[str] = []
            if offline_before is not None:
                offline = list(
                    s.scalars(
                        sa.select(NodeRow.node_id).where(
                            NodeRow.online.is_(True), NodeRow.last_seen < offline_before
                        )
                    ).all()
                )
                if offline:
                    s.execute(
                        sa.update(NodeRow)
                        .where(NodeRow.node_id.in_(offline), NodeRow.last_seen < offline_before)
                        .values(online=False)
                    )
                for node_id in offline:
                    audit_log.record(
                        s, actor=COORDINATOR, event="node.offline", subject=f"node:{node_id}",
                        details={"reason": "no heartbeat"}, now=now,
                    )  # fmt: skip
            s.flush()
            jobs = self._completable(s, set(due))
            return Expiry(
                tuple(timed_out),
                tuple(jobs),
                tuple(offline),
                tuple(delivered),
                tuple(timed_out_nodes),
            )

    def cancel_job(self, job_id: int, actor: str, reason: str, now: datetime) -> Cancellation:
        """Cancel a job that has not finished; its unanswered tasks are never sent or recorded.

        Returns the job and the delivered tasks whose agents should stop them. Raises
        NotFound, and Conflict when the job has already finished.
        """
        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            if JobState(row.state).is_final:
                raise Conflict(f"cannot cancel job {job_id}: it has already finished ({row.state})")
            tasks = s.scalars(
                sa.select(TaskRow)
                .where(TaskRow.job_id == job_id, TaskRow.state != TaskState.DONE.value)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).all()
            running = tuple(
                (t.node, t.task_id)
                for t in tasks
                if t.state in (TaskState.DELIVERED.value, TaskState.HELD.value)
            )
            for task in tasks:
                _give_up(task, now, f"cancelled by {actor}")
            row.state = JobState.CANCELLED.value
            row.reason = reason or f"cancelled by {actor}"
            row.updated_at = now
            audit_log.record(
                s, actor=actor, event="job.cancelled", subject=f"job:{job_id}",
                details={"reason": row.reason, "tasks": [t.task_id for t in tasks]}, now=now,
            )  # fmt: skip
            s.flush()
            s.refresh(row)
            return Cancellation(_job(row), running)

    def jobs_awaiting_completion(self) -> list[Job]:
        """Running jobs whose every task is done (left so by a crash between the two steps)."""
        with self._read() as s:
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
        with self._read() as s:
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
                    agent_version=(known[node].agent_version or "") if node in known else "",
                    certificate_not_after=(
                        _utc(known[node].certificate_not_after) if node in known else None
                    ),
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
    def _job_row(s: Session, job_id: int, lock: bool = False, with_tasks: bool = True) -> JobRow:
        """The job's row, locked if asked; with_tasks=False leaves its tasks and result unread."""
        query = sa.select(JobRow).where(JobRow.id == job_id)
        if with_tasks:
            # populate_existing: a row this session read without its tasks is read again
            query = query.options(selectinload(JobRow.tasks), selectinload(JobRow.result))
            query = query.execution_options(populate_existing=True)
        else:
            query = query.options(lazyload(JobRow.tasks), lazyload(JobRow.result))
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


def _give_up(task: TaskRow, now: datetime, reason: str) -> None:
    """Close an unanswered task as FAILED with reason; a late report of it changes nothing."""
    task.state = TaskState.DONE.value
    task.reported_at = now
    task.outcome = Outcome.FAILED.value
    task.payload = {}
    task.rules = []
    task.error = reason


def _node(row: NodeRow) -> Node:
    datasets = tuple(
        DatasetSchema(
            d["name"],
            dict(d["columns"]),
            grids=dict(d.get("grids") or {}),
            description=(
                DatasetDescription.from_json(d["description"]) if d.get("description") else None
            ),
            column_descriptions={
                c: ColumnDescription.from_json(about)
                for c, about in (d.get("column_descriptions") or {}).items()
            },
        )
        for d in row.datasets or []
    )
    return Node(
        row.node_id,
        bool(row.online),
        _utc(row.last_seen),
        datasets,
        tuple(row.analyses or []),
        paused=bool(row.paused),
    )


def _task(row: TaskRow) -> Task:
    output = None
    if row.outcome is not None:
        output = NodeOutput(
            outcome=Outcome(row.outcome),
            payload=row.payload or {},
            rules=tuple(
                RuleResult(r["rule"], r["passed"], r["detail"], r.get("setting", ""))
                for r in row.rules or []
            ),
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
        deadline_at=_utc(row.deadline_at),
    )


def _job(row: JobRow, with_tasks: bool = True) -> Job:
    spec = JobSpec(
        row.analysis,
        row.dataset,
        dict(row.params),
        tuple(row.nodes),
        row.project,
        deadline_s=row.deadline_s or DEFAULT_DEADLINE_S,
        on_pause=PauseChoice(row.on_pause or PauseChoice.WAIT.value),
    )
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
