"""The coordinator's domain objects: jobs, their per-node tasks, and nodes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fedtre.analyses.base import DatasetSchema, NodeOutput


class JobState(enum.StrEnum):
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    # Stopped by a person before it finished (reason says who and why).
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATES


FINAL_JOB_STATES = frozenset(
    {JobState.REJECTED, JobState.COMPLETED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED}
)

# How long each node has to answer a running job, unless the job says otherwise; and the
# most a job may ask for.
DEFAULT_DEADLINE_S = 3600
MAX_DEADLINE_S = 7 * 24 * 3600
# How often a task is sent to its node without an answer before it fails.
DEFAULT_MAX_DELIVERIES = 5


class PauseChoice(enum.StrEnum):
    """What a node's maintenance pause does to a job's tasks for it."""

    # The task waits for the node; its deadline is extended by the pause.
    WAIT = "wait"
    # The task is given up at once and the job finishes without the node (partial).
    PARTIAL = "partial"


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    # The node holds the output for its TRE's output checker; a final report follows.
    HELD = "held"
    DONE = "done"


@dataclass(frozen=True)
class JobSpec:
    """What a researcher asked for; params are already validated by the analysis."""

    analysis: str
    dataset: str
    params: dict[str, Any]
    nodes: tuple[str, ...]
    project: str
    # Seconds each node has to answer once the job runs (DEFAULT_DEADLINE_S when unset).
    deadline_s: int = DEFAULT_DEADLINE_S
    on_pause: PauseChoice = PauseChoice.WAIT


@dataclass(frozen=True)
class Task:
    """One node's part of a job; output is set once the node has reported."""

    task_id: str
    job_id: int
    node: str
    state: TaskState
    output: NodeOutput | None = None
    queued_at: datetime | None = None
    # The round of its job the task belongs to (1 for single-round analyses).
    round: int = 1
    # When the node must have answered by; None for tasks from before deadlines existed.
    deadline_at: datetime | None = None


@dataclass(frozen=True)
class Job:
    id: int
    spec: JobSpec
    state: JobState
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    decided_by: str = ""
    reason: str = ""
    tasks: tuple[Task, ...] = ()
    combined: dict[str, Any] | None = None
    decided_at: datetime | None = None
    # Iterative analyses (coordinator.domain.rounds): the current round, from 1, and the
    # round state (None until a round has been combined); tasks are the current round's.
    round: int = 1
    round_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class Node:
    node_id: str
    online: bool
    last_seen: datetime | None
    datasets: tuple[DatasetSchema, ...] = ()
    analyses: tuple[str, ...] = ()
    # Paused for maintenance by its TRE: it takes no new tasks until it resumes.
    paused: bool = False

    def dataset(self, name: str) -> DatasetSchema | None:
        return next((d for d in self.datasets if d.name == name), None)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission; node is empty when it concerns the whole request."""

    message: str
    node: str = ""


@dataclass(frozen=True)
class Plan:
    """The outcome of checking a submission: its target nodes, or the problems found."""

    spec: JobSpec
    problems: tuple[Problem, ...] = field(default_factory=tuple)
