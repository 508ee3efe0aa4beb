"""Storage of multi-round jobs: the next round's tasks and the job's round state, in one transaction.

A job's round number and round state are columns of its row (jobs.round_no,
jobs.round_state) and each task carries its round (tasks.round_no), so a coordinator that
restarts finds every round where it left it: a round whose tasks are all done but not yet
combined is picked up by jobs_awaiting_completion, like any job a crash left uncombined.
Both methods check the round they expect, so a round is advanced or finished once, however
many threads or replicas try.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from coordinator.domain.model import DEFAULT_DEADLINE_S, Job, JobState, TaskState
from coordinator.store import audit_log
from coordinator.store.audit_log import COORDINATOR
from coordinator.store.schema import JobRow, ResultRow, TaskRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class RoundStore:
    """The Store's methods for jobs of several rounds (mixed into coordinator.store.store.Store)."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Session]: ...

        @staticmethod
        def _job_row(s: Session, job_id: int, lock: bool = False) -> JobRow: ...

    def start_round(
        self,
        job_id: int,
        expected_round: int,
        round_state: dict[str, Any],
        nodes: Sequence[str],
        now: datetime,
    ) -> Job | None:
        """Queue the round after `expected_round` for `nodes`, with the job's new round state.

        Returns the job in its new round, or None, changing nothing, when the job is no longer
        running or no longer in expected_round (another caller advanced it first).
        """
        from coordinator.store.store import _job

        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            if row.state != JobState.RUNNING.value or (row.round_no or 1) != expected_round:
                return None
            round_no = expected_round + 1
            row.round_no = round_no
            row.round_state = round_state
            row.updated_at = now
            tasks = {node: str(uuid.uuid4()) for node in nodes}
            for node, task_id in tasks.items():
                s.add(
                    TaskRow(
                        task_id=task_id,
                        job_id=job_id,
                        node=node,
                        state=TaskState.QUEUED.value,
                        queued_at=now,
                        round_no=round_no,
                        # each round has the job's deadline afresh (coordinator/scheduler.py)
                        deadline_at=now + timedelta(seconds=row.deadline_s or DEFAULT_DEADLINE_S),
                    )
                )
            audit_log.record(
                s, actor=COORDINATOR, event="job.round_started", subject=f"job:{job_id}",
                details={"round": round_no, "tasks": tasks}, now=now,
            )  # fmt: skip
            s.flush()
            s.refresh(row)
            return _job(row)

    def finish_rounds(
        self,
        job_id: int,
        expected_round: int,
        state: JobState,
        combined: dict[str, Any],
        round_state: dict[str, Any],
        now: datetime,
        reason: str = "",
    ) -> Job | None:
        """Move a multi-round job in `expected_round` to its final state with its result.

        Returns None, changing nothing, when the job is no longer running in that round.
        """
        from coordinator.store.store import _job

        with self._tx() as s:
            row = self._job_row(s, job_id, lock=True)
            if row.state != JobState.RUNNING.value or (row.round_no or 1) != expected_round:
                return None
            row.state = state.value
            row.round_state = round_state
            row.updated_at = now
            if reason:
                row.reason = reason
            s.add(ResultRow(job_id=job_id, combined=combined, created_at=now))
            audit_log.record(
                s, actor=COORDINATOR, event="job.completed", subject=f"job:{job_id}",
                details={"state": state.value, "rounds": expected_round}, now=now,
            )  # fmt: skip
            s.flush()
            s.refresh(row)
            return _job(row)
