"""The agent's own SQLite state: every task it received and every output it released."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.errors import Conflict, InvalidRequest, NotFound
from node_agent.task import TaskSpec

SCHEMA_VERSION = 1
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
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._engine = sa.create_engine(sa.URL.create("sqlite", database=str(path)))
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
            metadata.create_all(conn)
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
                conn.execute(tasks.insert().values(**row, received_at=self._clock()))
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
        return NodeOutput(
            outcome=Outcome(row.outcome),
            payload=row.payload,
            rules=tuple(RuleResult(**rule) for rule in row.rules),
            error=row.error,
        )

    def record_result(self, task_id: str, output: NodeOutput) -> None:
        """Record task_id's output and, if it leaves the TRE, log the release; one transaction.

        Raises NotFound when the task was never received and Conflict when it already has
        a result (an output is recorded, and released, once).
        """
        now = self._clock()
        rules = [{"rule": r.rule, "passed": r.passed, "detail": r.detail} for r in output.rules]
        with self._engine.begin() as conn:
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
                    rules=rules,
                    error=output.error,
                )
            )
            if updated.rowcount == 0:
                raise Conflict(f"task {task_id!r} already has a recorded result")
            if output.outcome in RELEASING:
                conn.execute(
                    releases.insert().values(
                        task_id=task_id,
                        job_id=job_id,
                        outcome=output.outcome.value,
                        released_at=now,
                        payload_sha256=payload_digest(output.payload),
                    )
                )

    def released_count(self) -> int:
        """Return how many outputs this agent has released."""
        with self._engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(releases)).scalar_one()

    def close(self) -> None:
        """Close the database's pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> AgentState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 5000")
    finally:
        cursor.close()
