"""Everything a task passes before the executor: its signed approval, then the TRE's say.

1. node_agent.verify: the grant is signed by the pinned network key, for this node, not
   expired, and matches the task (else REFUSED, audited, nothing recorded as run);
2. node_agent.policy (through the executor): project, analysis, dataset and columns
   served (else REFUSED);
3. node_agent.approvals: when the TRE's operator approves new projects or each job, the
   task waits for that decision (HELD) and runs, or is refused, once it is made;
4. node_agent.executor: disclosure control, the airlock, the exactly-once record.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from fedtre.analyses.base import NodeOutput, Outcome
from fedtre.errors import Conflict
from fedtre.identity.signing import GrantError
from node_agent import audit as agent_audit
from node_agent.approvals import OperatorApprovals, denied_output, waiting_output
from node_agent.executor import Executor
from node_agent.policy import LocalPolicy
from node_agent.sovereignty import GovernanceConfig
from node_agent.state import AgentState, tasks
from node_agent.task import TaskSpec
from node_agent.verify import TaskVerifier

logger = logging.getLogger(__name__)


class TaskGate:
    """The agent's run function: verify, apply governance, execute."""

    def __init__(
        self,
        verifier: TaskVerifier,
        executor: Executor,
        policy: LocalPolicy,
        governance: GovernanceConfig,
        state: AgentState,
        approvals: OperatorApprovals,
    ) -> None:
        self._verifier = verifier
        self._executor = executor
        self._policy = policy
        self._governance = governance
        self._state = state
        self._approvals = approvals

    def run(self, task: TaskSpec) -> NodeOutput:
        """Return the task's output; an unverifiable task is refused with the reason."""
        try:
            verified = self._verifier.verify(task)
        except GrantError as exc:
            return self._refuse_unverified(
                task, str(exc), "task refused: its signed approval does not hold"
            )
        earlier = self._earlier_task_of_job(verified)
        if earlier is not None:
            # One approved job is one run per node (per round): a second task of it was
            # made up in the coordinator's database, whatever its signature says.
            reason = (
                f"this node already ran job {verified.job_id} as task {earlier}; a second "
                "task of the same job is refused"
            )
            return self._refuse_unverified(task, reason, "task refused: a second task of one job")
        return self.run_verified(verified)

    def _refuse_unverified(self, task: TaskSpec, reason: str, message: str) -> NodeOutput:
        """Log and audit refusing a task that is not to run at all (nothing of it is
        recorded as received); return its REFUSED output, saying why."""
        logger.warning(
            message, extra={"task_id": task.task_id, "job_id": task.job_id, "reason": reason}
        )
        with self._state.engine.begin() as conn:
            agent_audit.record(
                conn, event="task.refused", subject=f"task:{task.task_id}",
                details={"job_id": task.job_id, "project": task.project, "reason": reason},
            )  # fmt: skip
        return NodeOutput(Outcome.REFUSED, {}, error=reason)

    def _earlier_task_of_job(self, task: TaskSpec) -> str | None:
        """Another task of task's job this node received, for a single-round task."""
        if task.round is not None:
            return None  # each round of a multi-round job is a task of its own
        with self._state.engine.connect() as conn:
            found = conn.execute(
                sa.select(tasks.c.task_id)
                .where(tasks.c.job_id == task.job_id, tasks.c.task_id != task.task_id)
                .limit(1)
            ).first()
        return None if found is None else str(found.task_id)

    def run_verified(self, task: TaskSpec) -> NodeOutput:
        """Run a verified task, or hold it for the operator's decision."""
        mode = self._governance.operator_approval
        if (
            mode == "none"
            or self._state.stored_result(task.task_id) is not None
            or self._policy.check_task(task)  # the executor refuses it, recorded
        ):
            return self._executor.run(task)
        kind = mode
        scope = task.project if kind == "project" else f"{task.project}/job-{task.job_id}"
        decided = self._approvals.decision(kind, scope)
        if decided is not None and decided[0] == "denied":
            return self._refuse(task, denied_output(kind, decided[1] or ""))
        if decided is not None and decided[0] == "approved":
            if self._verifier.expired(task):
                return self._refuse(
                    task,
                    NodeOutput(
                        Outcome.REFUSED,
                        {},
                        error="the task's approval expired while it waited for this TRE's "
                        "operator; refused",
                    ),
                )
            return self._executor.run(task)
        self._approvals.hold(task, kind, scope, self.describe(task), _approvers(task))
        logger.info(
            "task waits for the TRE operator's approval",
            extra={"task_id": task.task_id, "job_id": task.job_id, "kind": kind},
        )
        return waiting_output(kind, scope)

    def describe(self, task: TaskSpec) -> str:
        """What the task's output would be, and the checks it passes before it could leave."""
        analysis = self._policy.analyses[task.analysis]
        policy = self._policy.disclosure_for(task.project)
        parts = [
            f"{analysis.description.rstrip('.')} on dataset {task.dataset!r}",
            f"values from fewer than {policy.threshold} records are withheld",
        ]
        if policy.perturbation == "cell_key":
            parts.append(
                f"counts carry small consistent noise (at most +-{policy.noise_deviation})"
            )
        elif policy.rounding_base > 1:
            parts.append(f"counts are rounded to a multiple of {policy.rounding_base}")
        if policy.holds(task.analysis):
            parts.append("the output is then held for this TRE's output checker")
        return "; ".join(parts)

    def _refuse(self, task: TaskSpec, output: NodeOutput) -> NodeOutput:
        stored = self._state.stored_result(task.task_id)
        if stored is not None:
            return stored
        try:
            self._state.record_received(task)
            self._state.record_result(task.task_id, output)
        except Conflict:
            return self._state.stored_result(task.task_id) or output
        return output


def _approvers(task: TaskSpec) -> list[str]:
    try:
        return [str(a) for a in json.loads(task.grant).get("approved_by", [])]
    except (ValueError, AttributeError):
        return []
