"""The coordinator's use cases, independent of gRPC: submit, approve, dispatch, record, complete."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.approvals import Approvals, Withheld
from coordinator.domain import rounds
from coordinator.domain.completion import finish, withheld_reason
from coordinator.domain.model import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_DELIVERIES,
    Job,
    JobState,
    Node,
    PauseChoice,
    Plan,
    Task,
)
from coordinator.domain.planning import plan_job
from coordinator.domain.status import NetworkStatus
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.store import Cancellation, Expiry, Store
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome
from fedtre.errors import FedtreError, InvalidRequest, PermissionDenied
from fedtre.identity.peer import Identity
from fedtre.identity.provenance import Provenance
from fedtre.identity.signing import Signer
from fedtre.problems import problem_lines

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# The largest payload one node may return for one job (JSON bytes): aggregates are small.
DEFAULT_MAX_RESULT_BYTES = 1_000_000
# The most tasks a node has delivered and unanswered at once; more wait at the coordinator
# (each answer lets the next one go), so an agent's own queue stays short.
DEFAULT_MAX_IN_FLIGHT = 16


@dataclass(frozen=True)
class Report:
    """A node's report of one task: its output, and the agent's signed provenance if any."""

    node_id: str
    task_id: str
    output: NodeOutput
    provenance: Provenance | None = None


def utc_now() -> datetime:
    return datetime.now(UTC)


class CoordinatorService:
    """Every state change goes through here; methods are synchronous and thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        auto_approve: bool = False,
        clock: Clock = utc_now,
        metrics: CoordinatorMetrics | None = None,
        signer: Signer | None = None,
        default_deadline_s: int = DEFAULT_DEADLINE_S,
        offline_after_s: float | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.max_in_flight = max_in_flight
        self.max_result_bytes = max_result_bytes
        self.default_deadline_s = default_deadline_s
        self.offline_after_s = offline_after_s
        self.max_deliveries = max_deliveries
        self.auto_approve = auto_approve
        self.clock = clock
        self.metrics = metrics if metrics is not None else CoordinatorMetrics()
        # Project scope, approval policy, signed grants and visibility (coordinator.approvals).
        self.approvals = Approvals(store, signer, clock)
        # Called with node ids whenever a later round queues tasks for them outside a
        # request (the server wakes their task streams); None outside a server.
        self.on_tasks_queued: Callable[[Sequence[str]], None] | None = None
        # Called with (node, task id) pairs of delivered tasks whose job was cancelled or
        # which timed out, so their agents are told to stop them; None outside a server.
        self.on_tasks_cancelled: Callable[[Sequence[tuple[str, str, str]]], None] | None = None
        # Called with a job's id once this process has finished it (completed, rejected,
        # cancelled) or started its next round, from whichever thread did; GetJob's wait
        # listens (rpc.job_waiters).
        self.on_job_changed: list[Callable[[int], None]] = []

    # -- researchers ---------------------------------------------------------------------

    def plan(
        self,
        analysis: str,
        dataset: str,
        params: Mapping[str, Any],
        nodes: Sequence[str],
        project: str,
        *,
        deadline_s: int = 0,
        on_pause: PauseChoice | None = None,
    ) -> Plan:
        """Check a submission without queuing anything; the plan lists every problem.

        deadline_s 0 and on_pause None take the coordinator's defaults.
        """
        project = project or "default"
        known = self.approvals.candidate_nodes(project, nodes, self.store.nodes())
        return plan_job(
            analysis,
            dataset,
            params,
            nodes,
            project,
            known,
            deadline_s=deadline_s or self.default_deadline_s,
            on_pause=on_pause or PauseChoice.WAIT,
        )

    def submit(self, plan: Plan, submitted_by: str, request_id: str = "") -> Job:
        """Create a job from a problem-free plan; raise InvalidRequest listing every problem.

        With request_id (the client's idempotency key), a repeated submission by the same
        person returns the job the first one created, and creates nothing.
        """
        previous = self.store.job_by_request(submitted_by, request_id)
        if previous is not None:
            # A crash may have come between the job's creation and its automatic approval.
            return self._resume_approval(previous)
        if plan.problems:
            lines = problem_lines((p.node, p.message) for p in plan.problems)
            raise InvalidRequest(
                "the job was not submitted:\n" + "\n".join(f"- {line}" for line in lines)
            )
        job = self.store.create_job(plan.spec, submitted_by, self.clock(), request_id=request_id)
        self.metrics.job_submitted(job)
        logger.info("job submitted", extra={"job_id": job.id, "analysis": job.spec.analysis})
        if self.auto_approve:
            job = self.approve(job.id, "auto-approval")
        else:
            job = self.approvals.after_submit(job)
        return job

    def approve(self, job_id: int, approver: str) -> Job:
        """Add approver's approval; the job runs once its project's policy is met."""
        job = self.approvals.approve(job_id, approver)
        logger.info("job approved", extra={"job_id": job_id, "tasks": len(job.tasks)})
        return job

    def reject(self, job_id: int, approver: str, reason: str) -> Job:
        if not reason.strip():
            raise InvalidRequest(
                "give a reason for the rejection, e.g. --reason 'outside the project scope'"
            )
        job = self.store.reject_job(job_id, approver, reason, self.clock())
        self.metrics.job_rejected(job)
        self._changed(job_id)
        logger.info("job rejected", extra={"job_id": job_id})
        return job

    def job(self, job_id: int, viewer: Identity) -> Job:
        """The job, if viewer may see it: approvers and admins see every job, researchers
        those of their projects.

        Raises NotFound alike for a missing job and one of another project, so ids reveal nothing.
        """
        job = self.store.get_job(job_id)
        self.approvals.check_visible(viewer, job)
        return job

    def jobs(
        self,
        state: JobState | None,
        limit: int,
        *,
        project: str | None = None,
        node: str | None = None,
        viewer: Identity | None = None,
    ) -> list[Job]:
        """The newest jobs; with a viewer, only those of projects the viewer may see."""
        projects = None if viewer is None else self.approvals.visible_projects(viewer)
        return self.store.list_jobs(state, limit, project=project, node=node, projects=projects)

    def network_status(self, recent_failures: int) -> NetworkStatus:
        return self.store.network_status(recent_failures)

    def nodes(self) -> list[Node]:
        return list(self.store.nodes().values())

    # -- agents --------------------------------------------------------------------------

    def node_connected(
        self,
        node_id: str,
        datasets: Sequence[DatasetSchema],
        analyses: Sequence[str],
        connection_id: str = "",
        paused: bool = False,
        agent_version: str = "",
        certificate_not_after: datetime | None = None,
    ) -> None:
        finished = self.store.node_connected(
            node_id,
            datasets,
            analyses,
            self.clock(),
            connection_id,
            paused=paused,
            max_deliveries=self.max_deliveries,
            agent_version=agent_version,
            certificate_not_after=certificate_not_after,
        )
        logger.info(
            "node connected",
            extra={"node_id": node_id, "datasets": len(datasets), "paused": paused},
        )
        for job in finished:
            self._complete(job)

    def node_seen(self, node_id: str, connection_id: str) -> None:
        """Record a heartbeat of node's open stream."""
        self.nodes_seen([(node_id, connection_id)])

    def nodes_seen(self, heartbeats: Sequence[tuple[str, str]]) -> None:
        """Record heartbeats, (node, connection id), of open streams in one transaction."""
        now = self.clock()
        with self.store.atomic():
            for node_id, connection_id in heartbeats:
                self.store.node_seen(node_id, connection_id, now)

    # -- time ------------------------------------------------------------------------------

    def expire_overdue(self, now: datetime | None = None) -> Expiry:
        """One scheduler tick: time out overdue tasks, complete their jobs, mark silent nodes
        offline, and complete jobs a crash left uncombined. Idempotent; returns what changed.
        """
        now = now or self.clock()
        offline_before = (
            None if self.offline_after_s is None else now - timedelta(seconds=self.offline_after_s)
        )
        expiry = self.store.expire_overdue(now, offline_before=offline_before)
        if expiry.timed_out:
            logger.warning("tasks timed out", extra={"tasks": list(expiry.timed_out)})
        for node in expiry.timed_out_nodes:
            self.metrics.task_timed_out(node)
        if expiry.delivered and self.on_tasks_cancelled is not None:
            # The agents still working on them stop, and release nothing for them.
            self.on_tasks_cancelled(
                [(node, task_id, "the task timed out") for node, task_id in expiry.delivered]
            )
        if expiry.offline:
            logger.warning("nodes went silent", extra={"nodes": list(expiry.offline)})
        for job in expiry.jobs:
            self._complete(job)
        self.complete_leftovers()
        return expiry

    def cancel(self, job_id: int, actor: Identity, reason: str) -> Job:
        """Cancel a job that has not finished, if actor may; tell agents to stop its tasks.

        Its submitter, approvers and admins may cancel it; raises NotFound (also for a job
        the actor may not see), PermissionDenied and Conflict (already finished).
        """
        job = self.job(job_id, actor)
        if actor.role not in ("approver", "admin") and job.submitted_by != actor.name:
            raise PermissionDenied(
                f"only the job's submitter ({job.submitted_by}), approvers and admins may "
                f"cancel job {job_id}"
            )
        cancelled = self.store.cancel_job(job_id, actor.name, reason.strip(), self.clock())
        self.metrics.job_cancelled(cancelled.job)
        self._notify_cancelled(cancelled)
        self._changed(job_id)
        logger.info("job cancelled", extra={"job_id": job_id, "running": len(cancelled.running)})
        return cancelled.job

    def _notify_cancelled(self, cancelled: Cancellation) -> None:
        if self.on_tasks_cancelled is not None and cancelled.running:
            reason = cancelled.job.reason
            self.on_tasks_cancelled(
                [(node, task_id, reason) for node, task_id in cancelled.running]
            )

    def node_disconnected(self, node_id: str, connection_id: str = "") -> None:
        self.store.node_disconnected(node_id, self.clock(), connection_id)
        logger.info("node disconnected", extra={"node_id": node_id})

    def requeue(self, tasks: Sequence[Task]) -> None:
        """Return tasks taken by a stream that ended before it could send them."""
        self.store.requeue_tasks([t.task_id for t in tasks], self.clock())

    def take_tasks(self, node_id: str) -> list[tuple[Task, Job, bytes, bytes]]:
        """Take a node's queued tasks, each with its signed grant (grant, signature).

        A task the coordinator may not dispatch (its project's approval lapsed or has yet
        to start, or its approval record does not verify) is recorded as refused instead of
        being sent.
        """
        return self.take_tasks_for([node_id])[0]

    def take_tasks_for(self, node_ids: Sequence[str]) -> list[list[tuple[Task, Job, bytes, bytes]]]:
        """take_tasks for several nodes at once, in one transaction: per node, its tasks.

        The streams of a job fanned out to many nodes wake together; one commit for all
        of them rather than one each (coordinator.rpc.batching).
        """
        now = self.clock()
        by_node = self.store.take_queued_tasks_for(node_ids, now, max_in_flight=self.max_in_flight)
        per_node = [by_node[node] for node in node_ids]
        grants = iter(
            self.approvals.sign_tasks([pair for taken in per_node for pair in taken], now)
        )
        answer: list[list[tuple[Task, Job, bytes, bytes]]] = []
        withheld: list[tuple[Task, Withheld]] = []
        for node, taken in zip(node_ids, per_node, strict=True):
            self.metrics.tasks_delivered((task for task, _ in taken), now)
            signed = []
            for task, job in taken:
                grant = next(grants)
                if isinstance(grant, Withheld):
                    withheld.append((task, grant))
                    continue
                signed.append((task, job, *grant))
                logger.info(
                    "task delivered",
                    extra={"task_id": task.task_id, "job_id": job.id, "node_id": node},
                )
            answer.append(signed)
        for task, reason in withheld:
            self._withhold(task, str(reason))
        return answer

    def _withhold(self, task: Task, reason: str) -> None:
        logger.warning(
            "task withheld",
            extra={"task_id": task.task_id, "job_id": task.job_id, "reason": reason},
        )
        self.store.governance.audit(
            actor="coordinator", event="task.withheld", subject=f"task:{task.task_id}",
            details={"job_id": task.job_id, "node": task.node, "reason": reason}, now=self.clock(),
        )  # fmt: skip
        output = NodeOutput(
            Outcome.REFUSED, {}, error=f"not dispatched by the coordinator: {reason}"
        )
        self.record_result(task.node, task.task_id, output)

    def record_result(self, node_id: str, task_id: str, output: NodeOutput) -> None:
        """Store a node's output; complete the job when it was the last one outstanding.

        An output whose payload is larger than max_result_bytes is recorded as FAILED,
        saying so, and none of it is kept.
        """
        error = self.record_results([Report(node_id, task_id, output)])[0]
        if error is not None:
            raise error

    def record_results(self, reports: Sequence[Report]) -> list[FedtreError | None]:
        """record_result for several reports in one transaction; per report, its error or None.

        A report refused (another node's task, an unknown task) is refused alone: nothing
        of it is written, and the others are kept. Jobs whose last report this was are
        completed after the commit.
        """
        now = self.clock()
        outputs = [self._within_size_limit(report) for report in reports]
        with self.store.atomic():
            answers = self.store.record_results(
                [
                    (r.node_id, r.task_id, output)
                    for r, output in zip(reports, outputs, strict=True)
                ],
                now,
            )
            for report, answer in zip(reports, answers, strict=True):
                if report.provenance is not None and not isinstance(answer, FedtreError):
                    # Kept for the researcher to verify (the agent signed it).
                    self.store.governance.save_provenance(
                        report.task_id, report.node_id, report.provenance, now
                    )
        for report, output, answer in zip(reports, outputs, answers, strict=True):
            if not isinstance(answer, FedtreError):
                logger.info(
                    "result recorded",
                    extra={
                        "task_id": report.task_id,
                        "node_id": report.node_id,
                        "outcome": output.outcome.value,
                    },
                )
        for answer in answers:
            if isinstance(answer, Job):
                self._complete(answer)
        return [answer if isinstance(answer, FedtreError) else None for answer in answers]

    def _within_size_limit(self, report: Report) -> NodeOutput:
        output = report.output
        size = len(json.dumps(output.payload, separators=(",", ":"), default=str))
        if size <= self.max_result_bytes:
            return output
        logger.warning(
            "result over the size limit",
            extra={"task_id": report.task_id, "node_id": report.node_id, "bytes": size},
        )
        return NodeOutput(
            Outcome.FAILED,
            {},
            output.rules,
            f"the result of node '{report.node_id}' ({size} bytes) is larger than this "
            f"network's limit of {self.max_result_bytes} bytes per node and job; "
            "nothing of it was kept",
        )

    def _resume_approval(self, job: Job) -> Job:
        """Run the automatic approval of a job still pending approval (after a crash)."""
        if job.state is not JobState.PENDING_APPROVAL:
            return job
        try:
            if self.auto_approve:
                return self.approve(job.id, "auto-approval")
            return self.approvals.after_submit(job)
        except FedtreError:
            logger.exception("resuming the approval of a job failed", extra={"job_id": job.id})
            return job

    def resume_pending(self, limit: int = 10_000) -> int:
        """Approve the jobs a crash left pending that their project approves automatically.

        Returns how many now run. Idempotent: a job approved already is left as it is.
        """
        resumed = 0
        for job in self.store.list_jobs(JobState.PENDING_APPROVAL, limit):
            if self._resume_approval(job).state is not JobState.PENDING_APPROVAL:
                resumed += 1
        return resumed

    def complete_leftovers(self) -> int:
        """Complete jobs a crash left with every task done but no combined result."""
        jobs = self.store.jobs_awaiting_completion()
        for job in jobs:
            self._complete(job)
        return len(jobs)

    def _complete(self, job: Job) -> None:
        if rounds.iterative(job.spec.analysis) is not None:
            self._advance_rounds(job)
            return
        try:
            state, combined = finish(job.spec, job.tasks)
        except Exception:
            # A combination bug must not leave the job running forever.
            logger.exception("combining failed", extra={"job_id": job.id})
            state, combined = JobState.FAILED, {"error": "the results could not be combined"}
        now = self.clock()
        reason = str(combined.get("error") or "") or withheld_reason(job.tasks)
        if self.store.complete_job(job.id, state, combined, now, reason) is None:
            return  # someone else completed it first
        self.metrics.job_finished(job, state, now)
        self._changed(job.id)
        logger.info("job finished", extra={"job_id": job.id, "state": state.value})

    def _advance_rounds(self, job: Job) -> None:
        """Queue the next round of a multi-round job, or finish it (coordinator.domain.rounds)."""
        step = rounds.next_step(job)
        now = self.clock()
        if isinstance(step, rounds.NextRound):
            advanced = self.store.start_round(job.id, job.round, step.round_state, step.nodes, now)
            if advanced is None:
                return  # someone else advanced it first
            logger.info(
                "job round started",
                extra={"job_id": job.id, "round": step.round, "tasks": len(step.nodes)},
            )
            self._changed(job.id)
            if self.on_tasks_queued is not None:
                self.on_tasks_queued(step.nodes)
            return
        done = self.store.finish_rounds(
            job.id, job.round, step.state, step.combined, step.round_state, now, step.reason
        )
        if done is None:
            return
        self.metrics.job_finished(job, step.state, now)
        self._changed(job.id)
        logger.info(
            "job finished", extra={"job_id": job.id, "state": step.state.value, "round": job.round}
        )

    def _changed(self, job_id: int) -> None:
        for listener in self.on_job_changed:
            try:
                listener(job_id)
            except Exception:  # a listener's bug must not fail the state change behind it
                logger.exception("a job-changed listener failed", extra={"job_id": job_id})
