"""The TRE operator's approvals: projects or jobs that wait for a person before they run.

When [governance] operator_approval is "project" (or "job"), the first task of a new
project (of each job) waits here: the agent records a request with what the task would
do, keeps the verified task, and reports it HELD. The operator decides with
`fedtre agent inbox approve|deny r-...` (fedtre.cli.inbox) on the same state database;
the running agent's ApprovalRunner then runs each waiting task of an approved request
(through the executor, so every local rule still applies) or refuses it with the
operator's reason, and reports the outcome. A project approved once stays approved;
later tasks of it run at once. Every request and decision is in the agent's audit log.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.disclosure.rules import OPERATOR_APPROVAL
from fedtre.errors import Conflict, FedtreError, InvalidRequest, NotFound
from node_agent import audit as agent_audit
from node_agent.state import AgentState
from node_agent.task import TaskSpec

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
APPROVED, DENIED = "approved", "denied"

metadata = sa.MetaData()

requests = sa.Table(
    "operator_requests",
    metadata,
    sa.Column("request_id", sa.String, primary_key=True),
    sa.Column("kind", sa.String, nullable=False),  # "project" or "job"
    sa.Column("scope", sa.String, nullable=False),  # the project, or "project/job-N"
    sa.Column("project", sa.String, nullable=False),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("analysis", sa.String, nullable=False),
    sa.Column("dataset", sa.String, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
    sa.Column("approved_by", sa.JSON, nullable=False),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decision", sa.String),
    sa.Column("decided_by", sa.String),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.UniqueConstraint("kind", "scope"),
)

waiting = sa.Table(
    "operator_waiting_tasks",
    metadata,
    sa.Column("task_id", sa.String, primary_key=True),
    sa.Column("request_id", sa.String, sa.ForeignKey("operator_requests.request_id")),
    sa.Column("task", sa.Text, nullable=False),  # the verified task, grant included
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reported_at", sa.DateTime(timezone=True)),
)


# The approved Data Access Request behind a project request, as the coordinator sent it
# (null: the project has none, an admin created it).
applications = sa.Table(
    "operator_request_applications",
    metadata,
    sa.Column("request_id", sa.String, sa.ForeignKey("operator_requests.request_id"),
              primary_key=True),
    sa.Column("application", sa.JSON),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
)  # fmt: skip


@dataclass(frozen=True)
class Request:
    """A project or job awaiting (or given) the TRE operator's decision."""

    request_id: str
    kind: str
    scope: str
    project: str
    job_id: int
    analysis: str
    dataset: str
    params: dict[str, Any]
    outputs: str
    approved_by: list[str]
    requested_at: datetime
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    waiting: int
    # A project request's approved Data Access Request (None: none, or not fetched yet).
    application: dict[str, Any] | None = None
    application_fetched: bool = False

    @property
    def pending(self) -> bool:
        return self.decision is None


class OperatorApprovals:
    """Requests and waiting tasks, in the agent's state database."""

    def __init__(self, state: AgentState, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = state.engine
        self._clock = clock or (lambda: datetime.now(UTC))
        metadata.create_all(self._engine)

    def decision(self, kind: str, scope: str) -> tuple[str | None, str | None] | None:
        """Return (decision, reason) of the request for scope, or None if there is none."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(requests.c.decision, requests.c.reason).where(
                    requests.c.kind == kind, requests.c.scope == scope
                )
            ).first()
        return None if row is None else (row.decision, row.reason)

    def hold(
        self, task: TaskSpec, kind: str, scope: str, outputs: str, approved_by: list[str]
    ) -> str:
        """Keep task until the operator decides on scope; return the request id (idempotent)."""
        now = self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(requests.c.request_id).where(
                    requests.c.kind == kind, requests.c.scope == scope
                )
            ).first()
            if row is None:
                request_id = "r-" + secrets.token_hex(4)
                conn.execute(
                    requests.insert().values(
                        request_id=request_id,
                        kind=kind,
                        scope=scope,
                        project=task.project,
                        job_id=task.job_id,
                        analysis=task.analysis,
                        dataset=task.dataset,
                        params=json.loads(json.dumps(dict(task.params))),
                        outputs=outputs,
                        approved_by=approved_by,
                        requested_at=now,
                    )
                )
                agent_audit.record(
                    conn, event="operator.requested", subject=f"{kind}:{scope}",
                    details={"request_id": request_id, "task_id": task.task_id}, now=now,
                )  # fmt: skip
            else:
                request_id = row.request_id
            exists = conn.execute(
                sa.select(waiting.c.task_id).where(waiting.c.task_id == task.task_id)
            ).first()
            if exists is None:
                conn.execute(
                    waiting.insert().values(
                        task_id=task.task_id,
                        request_id=request_id,
                        task=_dump(task),
                        received_at=now,
                    )
                )
        return request_id

    def requests(self, *, pending_only: bool = True) -> list[Request]:
        query = _request_query().order_by(requests.c.requested_at, requests.c.request_id)
        if pending_only:
            query = query.where(requests.c.decision.is_(None))
        with self._engine.connect() as conn:
            return [_request(r) for r in conn.execute(query)]

    def request(self, request_id: str) -> Request:
        with self._engine.connect() as conn:
            row = conn.execute(_request_query().where(requests.c.request_id == request_id)).first()
        if row is None:
            raise NotFound(f"no approval request {request_id!r}; `fedtre agent inbox list`")
        return _request(row)

    def decide(self, request_id: str, *, approve: bool, operator: str, reason: str) -> Request:
        """Record the operator's decision (once); the running agent acts on it."""
        if not operator.strip():
            raise InvalidRequest("the operator's name is required, e.g. --checker j.smith")
        if not approve and not reason.strip():
            raise InvalidRequest("give the researcher a reason, e.g. --reason 'not in our remit'")
        now = self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(requests).where(requests.c.request_id == request_id)
            ).first()
            if row is None:
                raise NotFound(f"no approval request {request_id!r}; `fedtre agent inbox list`")
            if row.decision is not None:
                raise Conflict(
                    f"request {request_id} was already {row.decision} by {row.decided_by}"
                )
            conn.execute(
                requests.update()
                .where(requests.c.request_id == request_id)
                .values(
                    decision=APPROVED if approve else DENIED,
                    decided_by=operator.strip(),
                    decided_at=now,
                    reason=reason.strip(),
                )
            )
            agent_audit.record(
                conn, actor=operator.strip(),
                event="operator.approved" if approve else "operator.denied",
                subject=f"{row.kind}:{row.scope}",
                details={"request_id": request_id, "reason": reason.strip()}, now=now,
            )  # fmt: skip
        return self.request(request_id)

    def without_application(self) -> list[tuple[str, str]]:
        """(request id, project) of pending project requests whose application is not kept."""
        query = (
            sa.select(requests.c.request_id, requests.c.project)
            .outerjoin(applications, applications.c.request_id == requests.c.request_id)
            .where(
                requests.c.kind == "project",
                requests.c.decision.is_(None),
                applications.c.request_id.is_(None),
            )
        )
        with self._engine.connect() as conn:
            return [(r.request_id, r.project) for r in conn.execute(query)]

    def keep_application(self, request_id: str, application: dict[str, Any] | None) -> None:
        """Keep the application behind a project request (None: it has none)."""
        with self._engine.begin() as conn:
            if (
                conn.execute(
                    sa.select(applications.c.request_id).where(
                        applications.c.request_id == request_id
                    )
                ).first()
                is None
            ):
                conn.execute(
                    applications.insert().values(
                        request_id=request_id,
                        application=application,
                        fetched_at=self._clock(),
                    )
                )

    def application(self, request_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(asked yet, the application or None) for a project request."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(applications.c.application).where(applications.c.request_id == request_id)
            ).first()
        return (row is not None, None if row is None else row.application)

    def decided_waiting(self) -> list[tuple[TaskSpec, str, str]]:
        """Return (task, decision, reason) of waiting tasks whose request was decided."""
        query = (
            sa.select(waiting.c.task, requests.c.decision, requests.c.reason)
            .join(requests, requests.c.request_id == waiting.c.request_id)
            .where(requests.c.decision.is_not(None), waiting.c.reported_at.is_(None))
            .order_by(waiting.c.received_at)
        )
        with self._engine.connect() as conn:
            return [(_load(r.task), r.decision, r.reason or "") for r in conn.execute(query)]

    def mark_reported(self, task_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                waiting.update()
                .where(waiting.c.task_id == task_id)
                .values(reported_at=self._clock())
            )


def waiting_output(kind: str, scope: str) -> NodeOutput:
    """What the agent reports while a task waits for its operator."""
    what = f"project {scope!r}" if kind == "project" else f"job {scope.rsplit('-', 1)[-1]}"
    return NodeOutput(
        Outcome.HELD,
        {},
        (
            RuleResult(
                OPERATOR_APPROVAL, False, f"waiting for this TRE's operator to approve {what}"
            ),
        ),
    )


def denied_output(kind: str, reason: str) -> NodeOutput:
    return NodeOutput(
        Outcome.REFUSED,
        {},
        (RuleResult(OPERATOR_APPROVAL, False, f"denied by this TRE's operator: {reason}"),),
        error=f"this TRE's operator did not approve the {kind}: {reason}",
    )


class ApprovalRunner:
    """Runs or refuses waiting tasks once their request is decided, and reports them."""

    def __init__(
        self,
        approvals: OperatorApprovals,
        run: Callable[[TaskSpec], NodeOutput],
        report: Callable[[str, NodeOutput], bool],
        *,
        interval: float = POLL_INTERVAL_S,
        fetch_application: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        """fetch_application: the approved Data Access Request behind a project (None when
        it has none), kept with the project's request for the operator to read."""
        self._fetch_application = fetch_application
        self._approvals = approvals
        self._run = run
        self._report = report
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Act on every decided waiting task; return how many reached the coordinator."""
        self.fetch_applications()
        done = 0
        for task, decision, _reason in self._approvals.decided_waiting():
            if self._stopping.is_set():
                break
            output = self._run(task)  # the executor refuses a denied or expired task itself
            if decision == DENIED:
                logger.info("operator denied a waiting task", extra={"task_id": task.task_id})
            if self._report(task.task_id, output):
                self._approvals.mark_reported(task.task_id)
                done += 1
        return done

    def fetch_applications(self) -> None:
        """Keep the application of each pending project request (asked again until it
        can be asked)."""
        if self._fetch_application is None:
            return
        for request_id, project in self._approvals.without_application():
            try:
                found = self._fetch_application(project)
            except FedtreError:
                logger.warning(
                    "cannot fetch a project's application yet", extra={"project": project}
                )
                continue
            self._approvals.keep_application(request_id, found)

    def loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("acting on the operator's decisions failed; retrying")
            self._stopping.wait(self._interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop, name="operator-approvals", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stopping.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=10)


def _dump(task: TaskSpec) -> str:
    return json.dumps(
        {
            "task_id": task.task_id,
            "job_id": task.job_id,
            "node": task.node,
            "analysis": task.analysis,
            "dataset": task.dataset,
            "params": dict(task.params),
            "project": task.project,
            "grant": task.grant.hex(),
            "signature": task.signature.hex(),
        }
    )


def _load(text: str) -> TaskSpec:
    data = json.loads(text)
    return TaskSpec(
        task_id=data["task_id"],
        job_id=int(data["job_id"]),
        node=data["node"],
        analysis=data["analysis"],
        dataset=data["dataset"],
        params=data["params"],
        project=data["project"],
        grant=bytes.fromhex(data["grant"]),
        signature=bytes.fromhex(data["signature"]),
    )


def _request_query() -> sa.Select[Any]:
    count = (
        sa.select(sa.func.count())
        .where(waiting.c.request_id == requests.c.request_id)
        .scalar_subquery()
    )
    return sa.select(
        requests,
        count.label("waiting"),
        applications.c.application,
        applications.c.fetched_at.label("application_fetched_at"),
    ).outerjoin(applications, applications.c.request_id == requests.c.request_id)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _request(row: Any) -> Request:
    return Request(
        request_id=row.request_id,
        kind=row.kind,
        scope=row.scope,
        project=row.project,
        job_id=row.job_id,
        analysis=row.analysis,
        dataset=row.dataset,
        params=row.params,
        outputs=row.outputs,
        approved_by=list(row.approved_by or []),
        requested_at=_aware(row.requested_at),  # type: ignore[arg-type]
        decision=row.decision,
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at),
        reason=row.reason,
        waiting=int(row.waiting or 0),
        application=row.application,
        application_fetched=row.application_fetched_at is not None,
    )
