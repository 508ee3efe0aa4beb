"""The agent's own SQLite state: tasks received, outputs released, sets described, the airlock.

Tables:
- tasks: every task received and its recorded output (HELD until the output checker decides).
- releases: one row per output that left the TRE, with the SHA-256 of what left.
- described_sets: per dataset (across projects), every set of records an output described
  (differencing protection).
- reviews: outputs held for the TRE's output checker: what would leave, and the decision.
- settings: the operator's switches that outlive a restart (the maintenance pause).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.disclosure.differencing import (
    DescribedSet,
    decode_sketch,
    encode_sketch,
    sketch_digest,
    symmetric_difference,
)
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import REVIEW
from fedtre.errors import Conflict, InvalidRequest, NotFound
from fedtre.files import private_database
from node_agent import audit as agent_audit
from node_agent.task import TaskSpec

# 2: cohorts and reviews tables (created on an existing version-1 file).
# 3: the hash-chained audit log (node_agent.audit), created on an existing file.
# 4: settings (the maintenance pause), created on an existing file.
# 5: described_sets (sketches with their predicates) replaces cohorts.
SCHEMA_VERSION = 5
# Outcomes whose payload leaves the TRE; only these enter the released-outputs log.
RELEASING = frozenset({Outcome.RELEASED, Outcome.SUPPRESSED})

Clock = Callable[[], datetime]

metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", sa.String, primary_key=True),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("project", sa.String, nullable=False),
    sa.Column("analysis", sa.String, nullable=False),
    sa.Column("dataset", sa.String, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("outcome", sa.String),
    sa.Column("payload", sa.JSON),
    sa.Column("rules", sa.JSON),
    sa.Column("error", sa.Text),
)

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    # unique: one task's output is released once, however often the task is delivered
    sa.Column("task_id", sa.String, sa.ForeignKey("tasks.task_id"), nullable=False, unique=True),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.String, nullable=False),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
)


# The differencing memory: every set of records an output described (a cohort, or a group
# of one), per dataset across projects. Replaces the version-4 "cohorts" table, whose
# member hashes this version cannot compare (dropped on upgrade).
described_sets = sa.Table(
    "described_sets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String, nullable=False),
    sa.Column("dataset", sa.String, nullable=False),
    # how records were identified; sets compare only under the same scheme
    sa.Column("scheme", sa.String, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    # SHA-256 of the sketch: equal sets, equal digests
    sa.Column("digest", sa.String(64), nullable=False),
    # the canonical question that described it (fedtre.disclosure.differencing)
    sa.Column("predicate", sa.String(64), nullable=False),
    # the set's sketch (fedtre.disclosure.differencing: an IBLT of its record ids)
    sa.Column("sketch", sa.LargeBinary, nullable=False),
    sa.Column("task_id", sa.String, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_described_sets_lookup", "dataset", "scheme", "size"),
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("task_id", sa.String, sa.ForeignKey("tasks.task_id"), primary_key=True),
    sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
    # the output as it would leave if approved
    sa.Column("outcome", sa.String, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("decision", sa.String),  # null (pending), "approved" or "denied"
    sa.Column("decided_by", sa.String),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    # when the final outcome reached the coordinator
    sa.Column("reported_at", sa.DateTime(timezone=True)),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
)
PAUSE = "pause"

APPROVED = "approved"
DENIED = "denied"


@dataclass(frozen=True)
class Pause:
    """The TRE operator paused this agent: by whom, why, since when."""

    by: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class Review:
    """One held output: the task, what would leave, and the output checker's decision."""

    task_id: str
    job_id: int
    project: str
    analysis: str
    dataset: str
    params: dict[str, Any]
    held_at: datetime
    candidate: NodeOutput
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    reported_at: datetime | None

    @property
    def pending(self) -> bool:
        return self.decision is None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def payload_digest(payload: dict[str, Any]) -> str:
    """Return the SHA-256 of payload's canonical JSON, as logged for each release."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class AgentState:
    """The agent's task and release log in one SQLite file; every write commits before returning.

    Safe to share between threads. WAL with synchronous=FULL means a committed release
    survives a crash or power loss.
    """

    def __init__(self, path: str | Path, *, clock: Clock = _utcnow) -> None:
        path = Path(path)
        private_database(path)
        self.path = path
        self._clock = clock
        self._engine = sa.create_engine(sa.URL.create("sqlite", database=str(path)))
        # check-then-record of cohorts must not interleave between tasks of this agent
        self._cohort_lock = threading.Lock()
        sa.event.listen(self._engine, "connect", _set_pragmas)
        try:
            self._migrate()
        except BaseException:
            self._engine.dispose()
            raise

    def _migrate(self) -> None:
        with self._engine.begin() as conn:
            version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
            if version > SCHEMA_VERSION:
                raise InvalidRequest(
                    f"agent state {self.path} was written by a newer fedtre agent "
                    f"(schema {version}); upgrade this agent or use a new state_db"
                )
            if version < 5:
                conn.exec_driver_sql("DROP TABLE IF EXISTS cohorts")
            metadata.create_all(conn)
            agent_audit.create(conn)
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def engine(self) -> sa.Engine:
        """The state database's engine, for the agent's other tables (approvals, audit)."""
        return self._engine

    def record_received(self, task: TaskSpec) -> None:
        """Record that task arrived; a redelivery of the same task is a no-op.

        Raises Conflict when the task id was received before with different content.
        """
        row = {
            "task_id": task.task_id,
            "job_id": task.job_id,
            "project": task.project,
            "analysis": task.analysis,
            "dataset": task.dataset,
            # as JSON stores it, so a redelivery compares equal to what was stored
            "params": json.loads(json.dumps(dict(task.params))),
        }
        with self._engine.begin() as conn:
            existing = conn.execute(
                sa.select(*(tasks.c[key] for key in row)).where(tasks.c.task_id == task.task_id)
            ).first()
            if existing is None:
                now = self._clock()
                conn.execute(tasks.insert().values(**row, received_at=now))
                agent_audit.record(
                    conn, event="task.received", subject=f"task:{task.task_id}",
                    details={k: row[k] for k in ("job_id", "project", "analysis", "dataset")},
                    now=now,
                )  # fmt: skip
            elif existing._asdict() != row:
                raise Conflict(
                    f"task {task.task_id!r} was received before with different content; "
                    "a task id names one task only"
                )

    def stored_result(self, task_id: str) -> NodeOutput | None:
        """Return the output recorded for task_id, or None if it has not finished."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(tasks.c.outcome, tasks.c.payload, tasks.c.rules, tasks.c.error).where(
                    tasks.c.task_id == task_id, tasks.c.finished_at.is_not(None)
                )
            ).first()
        if row is None:
            return None
        return _output(row.outcome, row.payload, row.rules, row.error)

    def record_result(self, task_id: str, output: NodeOutput) -> None:
        """Record task_id's output and, if it leaves the TRE, log the release; one transaction.

        Raises NotFound when the task was never received and Conflict when it already has
        a result (an output is recorded, and released, once).
        """
        if output.outcome is Outcome.HELD:
            raise ValueError("a held output is recorded with record_held")
        now = self._clock()
        with self._engine.begin() as conn:
            job_id = self._finish(conn, task_id, output, now)
            agent_audit.record(
                conn, event="task.finished", subject=f"task:{task_id}",
                details={"job_id": job_id, "outcome": output.outcome.value,
                         "error": output.error[:500]},
                now=now,
            )  # fmt: skip
            if output.outcome in RELEASING:
                digest = payload_digest(output.payload)
                conn.execute(
                    releases.insert().values(
                        task_id=task_id,
                        job_id=job_id,
                        outcome=output.outcome.value,
                        released_at=now,
                        payload_sha256=digest,
                    )
                )
                agent_audit.record(
                    conn, event="output.released", subject=f"task:{task_id}",
                    details={"job_id": job_id, "outcome": output.outcome.value,
                             "payload_sha256": digest},
                    now=now,
                )  # fmt: skip

    # -- differencing ---------------------------------------------------------------------

    def check_and_record_sets(
        self,
        project: str,
        dataset: str,
        scheme: str,
        sets: Sequence[DescribedSet],
        policy: DisclosurePolicy,
        task_id: str,
        *,
        remember_on_conflict: bool,
    ) -> int | None:
        """Compare sets with every set described before on dataset; then remember them.

        The memory is the dataset's, across every project and researcher: the same pair of
        sets asked in two projects describes the same people. Returns None when each set
        either differs from each earlier one by at least policy.threshold records or is an
        earlier set asked by the same question; otherwise the smallest offending difference
        (0: the same records as an earlier, different question). The sets are remembered
        when they pass, and also when they do not if remember_on_conflict (a measured
        cohort counts even when blocked, so probing near it is blocked as well). Sets are
        compared with earlier outputs' only, never with each other (how the groups of one
        output relate is its own suppression's concern). One step per agent; `project` is
        kept for the operator's audit.
        """
        t = policy.threshold
        worst: int | None = None
        with self._cohort_lock, self._engine.begin() as conn:
            unique = {(sketch_digest(d.sketch), d.predicate): d for d in sets}
            new: list[tuple[DescribedSet, str]] = []
            for (digest, _), described in unique.items():
                found, asked_before = self._compare(conn, dataset, scheme, described, digest, t)
                if found is not None and (worst is None or found < worst):
                    worst = found
                if not asked_before:
                    new.append((described, digest))
            if worst is not None and not remember_on_conflict:
                return worst
            now = self._clock()
            for described, digest in new:
                conn.execute(
                    described_sets.insert().values(
                        project=project,
                        dataset=dataset,
                        scheme=scheme,
                        size=described.size,
                        digest=digest,
                        predicate=described.predicate,
                        sketch=encode_sketch(described.sketch),
                        task_id=task_id,
                        recorded_at=now,
                    )
                )
        return worst

    @staticmethod
    def _compare(
        conn: sa.Connection,
        dataset: str,
        scheme: str,
        described: DescribedSet,
        digest: str,
        t: int,
    ) -> tuple[int | None, bool]:
        """Return (the smallest offending difference or None, whether this very question
        described these records before)."""
        table = described_sets
        where = (
            table.c.dataset == dataset,
            table.c.scheme == scheme,
            table.c.size > described.size - t,
            table.c.size < described.size + t,
        )
        rows = conn.execute(
            sa.select(table.c.digest, table.c.predicate, table.c.sketch).where(*where)
        ).all()
        same = [r for r in rows if r.digest == digest]
        asked_before = any(r.predicate == described.predicate for r in same)
        worst: int | None = None if asked_before or not same else 0
        for row in rows:
            if row.digest == digest:
                continue
            d = symmetric_difference(described.sketch, decode_sketch(row.sketch), limit=t)
            if d is not None and 0 < d and (worst is None or d < worst):
                worst = d
        return worst, asked_before

    def cohort_count(self, project: str | None = None) -> int:
        """Return how many sets the differencing memory holds (first described in one
        project, if given)."""
        query = sa.select(sa.func.count()).select_from(described_sets)
        if project is not None:
            query = query.where(described_sets.c.project == project)
        with self._engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # -- airlock ---------------------------------------------------------------------------

    def record_held(self, task_id: str, held: NodeOutput, candidate: NodeOutput) -> None:
        """Record task_id as HELD and keep `candidate` (what would leave) for review; one step.

        Raises NotFound when the task was never received and Conflict when it already has
        a result.
        """
        if held.outcome is not Outcome.HELD or held.payload:
            raise ValueError("a held output is recorded with outcome HELD and no payload")
        now = self._clock()
        with self._engine.begin() as conn:
            job_id = self._finish(conn, task_id, held, now)
            agent_audit.record(
                conn, event="output.held", subject=f"task:{task_id}",
                details={"job_id": job_id, "payload_sha256": payload_digest(candidate.payload)},
                now=now,
            )  # fmt: skip
            conn.execute(
                reviews.insert().values(
                    task_id=task_id,
                    held_at=now,
                    outcome=candidate.outcome.value,
                    payload=candidate.payload,
                    rules=_rules(candidate.rules),
                )
            )

    def reviews(self, *, pending_only: bool = False) -> list[Review]:
        """Return held outputs, oldest first (only those awaiting a decision, if asked)."""
        query = _review_query().order_by(reviews.c.held_at, reviews.c.task_id)
        if pending_only:
            query = query.where(reviews.c.decision.is_(None))
        with self._engine.connect() as conn:
            return [_review(row) for row in conn.execute(query)]

    def review(self, task_id: str) -> Review:
        """Return one held output; raises NotFound when task_id was never held."""
        with self._engine.connect() as conn:
            row = conn.execute(_review_query().where(reviews.c.task_id == task_id)).first()
        if row is None:
            raise NotFound(
                f"no held output for task {task_id!r}; `fedtre agent inbox list` shows them"
            )
        return _review(row)

    def decide(self, task_id: str, *, approve: bool, checker: str, reason: str) -> NodeOutput:
        """Record the output checker's decision on a held output; return the final output.

        Approved: the held output becomes the task's result and is logged as released.
        Denied: the task's result is BLOCKED with no payload. Either way a "review" rule
        names the checker and the reason. Raises NotFound for an unknown task and
        Conflict when it was already decided (a decision is made once).
        """
        now = self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(reviews, tasks.c.job_id)
                .join(tasks, tasks.c.task_id == reviews.c.task_id)
                .where(reviews.c.task_id == task_id)
            ).first()
            if row is None:
                raise NotFound(
                    f"no held output for task {task_id!r}; `fedtre agent inbox list` shows them"
                )
            if row.decision is not None:
                raise Conflict(
                    f"the output of task {task_id!r} was already {row.decision} by "
                    f"{row.decided_by}; a decision is made once"
                )
            because = f": {reason}" if reason else ""
            kept = [RuleResult(**r) for r in row.rules if r["rule"] != REVIEW]
            if approve:
                verdict = RuleResult(REVIEW, True, f"approved by output checker {checker}{because}")
                final = NodeOutput(Outcome(row.outcome), row.payload, (*kept, verdict))
            else:
                verdict = RuleResult(REVIEW, False, f"denied by output checker {checker}{because}")
                final = NodeOutput(
                    Outcome.BLOCKED,
                    {},
                    (*kept, verdict),
                    error=f"the TRE's output checker did not release this output{because}",
                )
            conn.execute(
                reviews.update()
                .where(reviews.c.task_id == task_id)
                .values(
                    decision=APPROVED if approve else DENIED,
                    decided_by=checker,
                    decided_at=now,
                    reason=reason,
                )
            )
            conn.execute(
                tasks.update()
                .where(tasks.c.task_id == task_id)
                .values(
                    outcome=final.outcome.value,
                    payload=final.payload,
                    rules=_rules(final.rules),
                    error=final.error,
                )
            )
            agent_audit.record(
                conn, actor=checker, event="review.approved" if approve else "review.denied",
                subject=f"task:{task_id}", details={"job_id": row.job_id, "reason": reason},
                now=now,
            )  # fmt: skip
            if final.outcome in RELEASING:
                digest = payload_digest(final.payload)
                conn.execute(
                    releases.insert().values(
                        task_id=task_id,
                        job_id=row.job_id,
                        outcome=final.outcome.value,
                        released_at=now,
                        payload_sha256=digest,
                    )
                )
                agent_audit.record(
                    conn, actor=checker, event="output.released", subject=f"task:{task_id}",
                    details={"job_id": row.job_id, "outcome": final.outcome.value,
                             "payload_sha256": digest},
                    now=now,
                )  # fmt: skip
        return final

    def decided_unreported(self) -> list[tuple[str, NodeOutput]]:
        """Return (task_id, final output) of decided outputs not yet reported, oldest first."""
        query = (
            sa.select(
                tasks.c.task_id, tasks.c.outcome, tasks.c.payload, tasks.c.rules, tasks.c.error
            )
            .join(reviews, reviews.c.task_id == tasks.c.task_id)
            .where(reviews.c.decision.is_not(None), reviews.c.reported_at.is_(None))
            .order_by(reviews.c.decided_at)
        )
        with self._engine.connect() as conn:
            return [
                (r.task_id, _output(r.outcome, r.payload, r.rules, r.error))
                for r in conn.execute(query)
            ]

    def mark_reported(self, task_id: str) -> None:
        """Record that a decided output's final outcome reached the coordinator."""
        with self._engine.begin() as conn:
            conn.execute(
                reviews.update()
                .where(reviews.c.task_id == task_id, reviews.c.reported_at.is_(None))
                .values(reported_at=self._clock())
            )

    # -- maintenance -----------------------------------------------------------------------

    def pause(self, by: str, reason: str) -> Pause:
        """Pause the agent for maintenance (idempotent: an existing pause is kept).

        A running agent notices within seconds and takes no new tasks until resume().
        """
        now = self._clock()
        with self._engine.begin() as conn:
            current = _pause(conn)
            if current is not None:
                return current
            value = {"by": by, "reason": reason}
            conn.execute(settings.insert().values(key=PAUSE, value=value, changed_at=now))
            agent_audit.record(
                conn, actor=by, event="agent.paused", details={"reason": reason}, now=now
            )
        return Pause(by, reason, now)

    def resume(self, by: str) -> bool:
        """End a pause; return False when the agent was not paused."""
        now = self._clock()
        with self._engine.begin() as conn:
            if _pause(conn) is None:
                return False
            conn.execute(settings.delete().where(settings.c.key == PAUSE))
            agent_audit.record(conn, actor=by, event="agent.resumed", now=now)
        return True

    def paused(self) -> Pause | None:
        """The current pause, or None when the agent serves tasks."""
        with self._engine.connect() as conn:
            return _pause(conn)

    def released_count(self) -> int:
        """Return how many outputs this agent has released."""
        with self._engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(releases)).scalar_one()

    @staticmethod
    def _finish(conn: sa.Connection, task_id: str, output: NodeOutput, now: datetime) -> int:
        """Record a received task's output; return its job id (NotFound, Conflict)."""
        job_id = conn.execute(
            sa.select(tasks.c.job_id).where(tasks.c.task_id == task_id)
        ).scalar_one_or_none()
        if job_id is None:
            raise NotFound(f"task {task_id!r} was never recorded as received")
        updated = conn.execute(
            tasks.update()
            .where(tasks.c.task_id == task_id, tasks.c.finished_at.is_(None))
            .values(
                finished_at=now,
                outcome=output.outcome.value,
                payload=output.payload,
                rules=_rules(output.rules),
                error=output.error,
            )
        )
        if updated.rowcount == 0:
            raise Conflict(f"task {task_id!r} already has a recorded result")
        return int(job_id)

    def close(self) -> None:
        """Close the database's pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> AgentState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pause(conn: sa.Connection) -> Pause | None:
    row = conn.execute(
        sa.select(settings.c.value, settings.c.changed_at).where(settings.c.key == PAUSE)
    ).first()
    if row is None:
        return None
    since = _aware(row.changed_at)
    assert since is not None  # the column is NOT NULL
    return Pause(str(row.value.get("by", "")), str(row.value.get("reason", "")), since)


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 5000")
    finally:
        cursor.close()


def _rules(rules: Any) -> list[dict[str, Any]]:
    return [
        {"rule": r.rule, "passed": r.passed, "detail": r.detail, "setting": r.setting}
        for r in rules
    ]


def _output(outcome: str, payload: Any, rules: Any, error: str | None) -> NodeOutput:
    return NodeOutput(
        outcome=Outcome(outcome),
        payload=payload or {},
        rules=tuple(RuleResult(**rule) for rule in rules or []),
        error=error or "",
    )


def _review_query() -> sa.Select[Any]:
    return sa.select(
        reviews,
        tasks.c.job_id,
        tasks.c.project,
        tasks.c.analysis,
        tasks.c.dataset,
        tasks.c.params,
    ).join(tasks, tasks.c.task_id == reviews.c.task_id)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _review(row: Any) -> Review:
    return Review(
        task_id=row.task_id,
        job_id=row.job_id,
        project=row.project,
        analysis=row.analysis,
        dataset=row.dataset,
        params=row.params,
        held_at=_aware(row.held_at),  # type: ignore[arg-type]
        candidate=_output(row.outcome, row.payload, row.rules, ""),
        decision=row.decision,
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at),
        reason=row.reason,
        reported_at=_aware(row.reported_at),
    )
