"""Checking each task's signed approval before anything else happens to it.

The agent pinned the network's job-verification key at enrolment. A task runs only if it
carries a grant signed by that key, addressed to this node, not expired, and matching
the task's own fields; the agent then runs what the grant says. Anything else is
refused, and the refusal reported with its reason, whatever the coordinator says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fedtre.identity.signing import GrantError, Verifier
from node_agent.task import TaskSpec

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TaskVerifier:
    """Verifies tasks for one node against the pinned network key."""

    def __init__(self, node_id: str, verifier: Verifier, clock: Clock = _utc_now) -> None:
        self.node_id = node_id
        self._verifier = verifier
        self._clock = clock

    def verify(self, task: TaskSpec) -> TaskSpec:
        """Return the task as its grant approved it.

        Raises GrantError (a public reason) when the grant is missing, does not verify,
        is for another node or task, has expired, or differs from the task's fields.
        """
        grant = self._verifier.task_grant(
            task.grant, task.signature, node=self.node_id, now=self._clock()
        )
        differs = [
            name
            for name, sent, approved in (
                ("task id", task.task_id, grant.task_id),
                ("job id", task.job_id, grant.job_id),
                ("node", task.node, grant.node),
                ("project", task.project, grant.project),
                ("analysis", task.analysis, grant.analysis),
                ("dataset", task.dataset, grant.dataset),
                ("parameters", _plain(task.params), _plain(grant.params)),
            )
            if sent != approved
        ]
        if differs:
            raise GrantError(
                f"the task's {', '.join(differs)} differ from what was approved and signed "
                "(altered after approval?); refused"
            )
        # Run exactly what was signed: the grant's values, not the wire's.
        return replace(
            task,
            job_id=grant.job_id,
            node=grant.node,
            project=grant.project,
            analysis=grant.analysis,
            dataset=grant.dataset,
            params=dict(grant.params),
        )

    def expired(self, task: TaskSpec) -> bool:
        """Whether a task verified earlier has expired since (checked again before it runs)."""
        try:
            self._verifier.task_grant(
                task.grant, task.signature, node=self.node_id, now=self._clock()
            )
        except GrantError:
            return True
        return False


def _plain(params: Any) -> Any:
    # The wire's Struct turns every number into a float; compare as JSON numbers do.
    return json.loads(json.dumps(params), parse_int=float)
