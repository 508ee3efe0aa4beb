"""The network at a glance: nodes and their queues, jobs by state, recent task failures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from coordinator.domain.model import JobState, TaskState
from fedtre.analyses.base import Outcome

# Task outcomes an admin should look at: the node could not or would not run the task.
FAILURE_OUTCOMES = (Outcome.FAILED, Outcome.REFUSED)


@dataclass(frozen=True)
class NodeQueue:
    """One node's connection and the tasks waiting for it or for its answer.

    oldest_queued_at: when the longest-waiting queued task entered the queue.
    oldest_delivered_at: when the longest-outstanding delivered task was delivered.
    """

    node_id: str
    online: bool
    last_seen: datetime | None
    queued: int = 0
    delivered: int = 0
    oldest_queued_at: datetime | None = None
    oldest_delivered_at: datetime | None = None
    # As the agent said and showed when it last opened its stream.
    agent_version: str = ""
    certificate_not_after: datetime | None = None


@dataclass(frozen=True)
class TaskFailure:
    """A task a node reported as failed or refused; error is the node's public message."""

    task_id: str
    job_id: int
    node: str
    analysis: str
    outcome: Outcome
    error: str
    reported_at: datetime | None


@dataclass(frozen=True)
class NetworkStatus:
    """A read-only snapshot of the coordinator's state.

    jobs_by_state has every JobState (zero when none); tasks_by_node_state has every
    (node, TaskState) pair of every node that is known or has tasks.
    """

    nodes: tuple[NodeQueue, ...]
    jobs_by_state: Mapping[JobState, int]
    tasks_by_node_state: Mapping[tuple[str, TaskState], int]
    recent_failures: tuple[TaskFailure, ...] = field(default_factory=tuple)
