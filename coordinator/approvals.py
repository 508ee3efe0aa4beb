"""Approvals with teeth: project scope, approval policy, and the signed grants agents obey.

- A submission must stay inside its project: a member submits, only the project's
  nodes, datasets and analyses, and only while its data-access approval runs (before
  its start: FAILED_PRECONDITION).
- A job runs once its project's policy is met: N different approvers (never the
  submitter), or at once for the analyses the project approves automatically.
- On approval the coordinator signs what was approved (a JobGrant) and stores it. Each
  task is dispatched from that signed record, never from the job row: it is verified
  again, and one node's part is signed as a TaskGrant that the agent checks against its
  pinned key. A job row altered in the database after approval therefore reaches no
  agent as an altered task: the agent sees its fields differ from the grant and refuses.
- A task whose project's approval has lapsed, or has yet to start, is not dispatched: the
  coordinator records it as refused, so its job still completes (partial). A project's
  start travels in its signed grants, and agents refuse a task before it too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from coordinator.domain.applications import ApplicationState
from coordinator.domain.governance import (
    AUTO_APPROVER,
    Project,
    approval_ended,
    approval_problem,
    can_see_job,
    is_member,
    not_started_problem,
    scope_problems,
    visible_projects,
)
from coordinator.domain.model import Job, JobState, Node, Plan, Problem, Task
from coordinator.store.applications import ApplicationStore
from coordinator.store.store import Store
from fedtre.errors import Conflict, NotFound, PermissionDenied, Unavailable
from fedtre.identity.peer import NAME_PATTERN, Identity
from fedtre.identity.signing import GrantError, JobGrant, Signer, TaskGrant
from fedtre.problems import problem_lines

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Withheld(Exception):
    """The coordinator will not dispatch a task; the message says why (public)."""


class Approvals:
    """The governance half of the coordinator's job use cases."""

    def __init__(self, store: Store, signer: Signer | None, clock: Clock) -> None:
        self.store = store
        self.governance = store.governance
        self.signer = signer
        self.clock = clock

    # -- submission --------------------------------------------------------------------

    def candidate_nodes(
        self, project: str, requested: Sequence[str], known: Mapping[str, Node]
    ) -> Mapping[str, Node]:
        """The nodes a submission without explicit targets goes to: its project's."""
        found = self.governance.project(project)
        if requested or found is None:
            return known
        return {n: node for n, node in known.items() if n in found.nodes}

    def scope_problems(self, identity: Identity, plan: Plan) -> list[Problem]:
        """Every way plan steps outside its project for identity (empty: in scope)."""
        spec = plan.spec
        project = self.governance.project(spec.project)
        now = self.clock()
        return scope_problems(
            project,
            identity,
            spec.project,
            spec.analysis,
            spec.dataset,
            spec.nodes,
            now,
            self.governance.member_of(identity.name),
            withdrawn=project is not None and project.lapsed(now) and self._withdrawn(project.name),
        )

    def _withdrawn(self, project: str) -> bool:
        """Whether the application that approved project was withdrawn."""
        found = ApplicationStore(self.store).for_project(project)
        return found is not None and found.state is ApplicationState.WITHDRAWN

    def start_problems(self, project_name: str) -> list[Problem]:
        """[why the project's jobs may not run yet] if its approval has yet to start, else
        []; only for its members (the start date is the project's to know)."""
        project = self.governance.project(project_name)
        problem = "" if project is None else not_started_problem(project, self.clock())
        return [Problem(problem)] if problem else []

    def refuse_before_start(self, identity: Identity, project_name: str) -> None:
        """Raise Conflict (FAILED_PRECONDITION), audited, when the project's approval has
        yet to start; call it once the submitter is known to be a member."""
        problems = self.start_problems(project_name)
        if not problems:
            return
        problem = problems[0].message
        self.governance.audit(
            actor=identity.name,
            event="job.refused",
            subject=f"project:{project_name}",
            details={"problems": [problem]},
            now=self.clock(),
        )
        raise Conflict(f"the job was not submitted: {problem}")

    def is_outsider(self, identity: Identity, project: str) -> bool:
        """Whether identity is not a member of project, or there is no such project.

        A malformed project name is no project at all: False, so that the request is
        refused as malformed (INVALID_ARGUMENT), whatever the caller's projects.
        """
        if not NAME_PATTERN.fullmatch(project):
            return False
        found = self.governance.project(project)
        return found is None or not is_member(identity, found)

    def refuse_out_of_scope(self, identity: Identity, problems: Sequence[Problem]) -> None:
        """Raise PermissionDenied listing problems, having audited the refusal."""
        if not problems:
            return
        self.governance.audit(
            actor=identity.name,
            event="job.refused",
            details={"problems": [p.message for p in problems]},
            now=self.clock(),
        )
        raise PermissionDenied(
            "the job was not submitted: it steps outside its project\n"
            + "\n".join(
                f"- {line}" for line in problem_lines((p.node, p.message) for p in problems)
            )
        )

    def after_submit(self, job: Job) -> Job:
        """Approve job at once when its project approves its analysis automatically."""
        project = self.governance.project(job.spec.project)
        if project is None or not project.approves_automatically(job.spec.analysis):
            return job
        return self.approve(job.id, AUTO_APPROVER)

    # -- approval ----------------------------------------------------------------------

    def approve(self, job_id: int, approver: str) -> Job:
        """Record approver's approval; release the job once its project's policy is met.

        Returns the job (still pending approval while more approvals are needed). Raises
        NotFound, Conflict (not pending, or approved by approver already) or
        PermissionDenied (the submitter, or the project's approval lapsed), audited.
        """
        now = self.clock()
        job = self.store.get_job(job_id)
        project = self.governance.project(job.spec.project)
        already = self.governance.approvers([job_id]).get(job_id, [])
        if job.state is JobState.PENDING_APPROVAL and project is not None:
            if approver == AUTO_APPROVER and AUTO_APPROVER in already:
                # A crash came between recording the automatic approval and releasing the
                # job (coordinator.service resumes it): release it now, once.
                return self._release(job, project, already, now)
        problem = "" if job.state is not JobState.PENDING_APPROVAL else approval_problem(
            Identity(approver, ""), job, project, already, now
        )  # fmt: skip
        if problem:
            self.governance.audit(
                actor=approver, event="approval.refused", subject=f"job:{job_id}",
                details={"reason": problem}, now=now,
            )  # fmt: skip
            raise PermissionDenied(problem)
        assert project is not None  # approval_problem refuses a job without a project
        # With a signing key, the approval, the signed grant and the queued tasks commit as
        # one transaction (one fsync; never an approval without its release). Without one,
        # the approval is kept and only the release refused (Unavailable), as it always was.
        with self.store.atomic() if self.signer is not None else contextlib.nullcontext():
            approvers = self.governance.add_approval(job_id, approver, now)
            if approver != AUTO_APPROVER and len(approvers) < project.approvals_required:
                logger.info(
                    "approval recorded",
                    extra={"job_id": job_id, "approvals": len(approvers),
                           "required": project.approvals_required},
                )  # fmt: skip
                return self.store.get_job(job_id)
            return self._release(job, project, approvers, now)

    def _release(self, job: Job, project: Project, approvers: list[str], now: datetime) -> Job:
        if self.signer is None:
            raise Unavailable(
                "this coordinator has no job-signing key, so it cannot approve jobs; start it "
                "with the key `fedtre ca init` wrote into its folder"
            )
        grant = JobGrant(
            job_id=job.id,
            project=job.spec.project,
            analysis=job.spec.analysis,
            dataset=job.spec.dataset,
            params=job.spec.params,
            nodes=job.spec.nodes,
            expires_at=project.approval_expires_at,  # type: ignore[arg-type]  # not lapsed
            approved_by=tuple(approvers),
            approved_at=now,
            starts_at=project.starts_at,
        )
        data, signature = self.signer.sign(grant)
        # Saved with the tasks, in one transaction, so no task is ever queued without its grant.
        with self.store.atomic():
            self.governance.save_grant(job.id, data, signature, now)
            return self.store.approve_job(job.id, ", ".join(approvers), now)

    # -- dispatch ----------------------------------------------------------------------

    def sign_task(self, task: Task, job: Job, now: datetime) -> tuple[bytes, bytes]:
        """Return (grant, signature) for one task, built from the job's signed approval.

        Raises Withheld when the approval record is missing or does not verify, does not
        cover this node, or the project's approval has lapsed.
        """
        signed = self.sign_tasks([(task, job)], now)[0]
        if isinstance(signed, Withheld):
            raise signed
        return signed

    def sign_tasks(
        self, taken: Sequence[tuple[Task, Job]], now: datetime
    ) -> list[tuple[bytes, bytes] | Withheld]:
        """sign_task for many tasks: per task, (grant, signature) or why it is withheld.

        Each job's signed approval is read and verified once, however many of its tasks
        there are (a job fanned out to 1,000 nodes); the reads do not wait for the writer.
        """
        signer = self.signer
        if signer is None:
            return [Withheld("the coordinator has no job-signing key")] * len(taken)
        jobs = {job.id: job for _, job in taken}
        approved = {job_id: self._approved(job, now, signer) for job_id, job in jobs.items()}
        signed: list[tuple[bytes, bytes] | Withheld] = []
        for task, job in taken:
            grant = approved[job.id]
            if isinstance(grant, Withheld):
                signed.append(grant)
            elif task.node not in grant[0].nodes:
                signed.append(
                    Withheld(f"job {job.id}'s approval does not cover node {task.node!r}")
                )
            else:
                signed.append(signer.sign(_task_grant(task, *grant)))
        return signed

    def _approved(
        self, job: Job, now: datetime, signer: Signer
    ) -> tuple[JobGrant, datetime, datetime | None] | Withheld:
        """The job's verified approval, when it lapses and starts, or why its tasks are
        withheld."""
        stored = self.governance.grant(job.id)
        if stored is None:
            return Withheld(f"job {job.id} has no signed approval record")
        try:
            approved = signer.verifier().job_grant(*stored)
        except GrantError as exc:
            return Withheld(
                f"job {job.id}'s signed approval record does not verify ({exc}); the "
                "database was altered after approval"
            )
        if approved.job_id != job.id:
            return Withheld(f"job {job.id}'s approval record is for job {approved.job_id}")
        project = self.governance.project(approved.project)
        expires = approved.expires_at
        if project is not None and project.approval_expires_at is not None:
            expires = min(expires, project.approval_expires_at)
        if project is None or now >= expires:
            withdrawn = self._withdrawn(approved.project)
            return Withheld(
                f"{approval_ended(approved.project, expires, withdrawn)}; the task was not "
                "dispatched"
            )
        starts = max(filter(None, (approved.starts_at, project.starts_at)), default=None)
        if starts is not None and now < starts:
            return Withheld(
                f"{not_started_problem(replace(project, starts_at=starts), now)}; the task "
                "was not dispatched"
            )
        return approved, expires, starts

    # -- visibility --------------------------------------------------------------------

    def visible_projects(self, viewer: Identity) -> tuple[str, ...] | None:
        """The projects whose jobs viewer may see; None means all."""
        if viewer.role == "node":
            return ()
        return visible_projects(viewer, self.governance.member_of(viewer.name))

    def check_visible(self, viewer: Identity, job: Job) -> None:
        """Raise NotFound (as for a missing job, so ids reveal nothing) unless viewer may see job."""
        if not can_see_job(viewer, job, self.governance.member_of(viewer.name)):
            self.governance.audit(
                actor=viewer.name, event="access.denied", subject=f"job:{job.id}",
                details={"reason": "not a member of the job's project"}, now=self.clock(),
            )  # fmt: skip
            raise NotFound(f"no job {job.id}; `fedtre jobs list` shows the jobs you can see")

    def approvals_of(self, jobs: Sequence[Job]) -> dict[int, tuple[list[str], int]]:
        """Each job's (approvers so far, approvals its project requires)."""
        approvers = self.governance.approvers([j.id for j in jobs])
        required: dict[str, int] = {}
        for job in jobs:
            if job.spec.project not in required:
                project = self.governance.project(job.spec.project)
                required[job.spec.project] = project.approvals_required if project else 1
        return {j.id: (approvers.get(j.id, []), required[j.spec.project]) for j in jobs}


def _task_grant(
    task: Task, approved: JobGrant, expires: datetime, starts: datetime | None
) -> TaskGrant:
    """One node's part of an approved job, as the agent will check it."""
    return TaskGrant(
        task_id=task.task_id,
        job_id=approved.job_id,
        node=task.node,
        project=approved.project,
        analysis=approved.analysis,
        dataset=approved.dataset,
        params=approved.params,
        expires_at=expires,
        approved_by=approved.approved_by,
        approved_at=approved.approved_at,
        starts_at=starts,
    )
