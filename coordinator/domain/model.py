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

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATES


FINAL_JOB_STATES = frozenset(
    {JobState.REJECTED, JobState.COMPLETED, JobState.PARTIAL, JobState.FAILED}
)


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
