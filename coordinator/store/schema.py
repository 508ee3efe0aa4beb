"""The coordinator's tables (SQLAlchemy 2 declarative models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class NodeRow(Base):
    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    # The stream that last connected: a late disconnect of an older stream must not
    # mark the node offline while its newer stream is open.
    connection_id: Mapped[str | None] = mapped_column(String(36))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Advertised metadata only: dataset names, column names and declared types.
    datasets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    analyses: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Paused for maintenance by its TRE (the agent says so when it opens its stream):
    # nothing is delivered to it; since when, so waiting tasks' deadlines can be extended.
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the agent said and showed when it last opened its stream (admins' node view).
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    certificate_not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProjectRow(Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Governance (coordinator/store/governance.py): what the project may use, until when,
    # and how its jobs are approved. Members are in project_members.
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    nodes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    datasets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    analyses: Mapped[list[Any]] = mapped_column(JSON, default=list)
    approval_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the approval starts (an approved application's start date); NULL: at creation.
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    auto_approve: Mapped[list[Any]] = mapped_column(JSON, default=list)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"))
    analysis: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    nodes: Mapped[list[Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(32), index=True)
    submitted_by: Mapped[str] = mapped_column(String(64))
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Iterative analyses (coordinator/store/rounds.py): the current round and its state.
    round_no: Mapped[int] = mapped_column(Integer, default=1)
    round_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Seconds each node has to answer once the job runs (coordinator/scheduler.py times
    # out tasks past it), and whether a paused node's tasks wait or are given up.
    deadline_s: Mapped[int] = mapped_column(Integer, default=3600)
    on_pause: Mapped[str] = mapped_column(String(16), default="wait")
    # The submitter's idempotency key: a retried submission finds the job it created.
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("submitted_by", "request_id"),)

    tasks: Mapped[list[TaskRow]] = relationship(
        back_populates="job", order_by="TaskRow.node", lazy="selectin"
    )
    result: Mapped[ResultRow | None] = relationship(lazy="selectin")


class TaskRow(Base):
    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The job round this task belongs to (1 for single-round analyses).
    round_no: Mapped[int] = mapped_column(Integer, default=1)
    # When the task (re-)entered its node's queue: at approval, or when a reconnecting
    # node's unreported task is queued again.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the node must have answered by (set when the task is queued); past it, the
    # scheduler's tick times the task out.
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # How often the task has been delivered; a task delivered max_deliveries times without
    # an answer (it crashes its agent, say) is failed rather than sent again.
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    # The node's checked output, exactly as it arrived.
    outcome: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rules: Mapped[list[Any] | None] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(Text, default="")

    job: Mapped[JobRow] = relationship(back_populates="tasks")


class ResultRow(Base):
    """The combined result of a finished job."""

    __tablename__ = "results"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    combined: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
