"""fedtre.v1.JobService: what researchers, approvers and admins call (with API tokens)."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Sequence

import grpc

from coordinator.auth import Authenticator
from coordinator.domain.model import Job
from coordinator.rpc.convert import (
    JOB_STATE_FROM_PB,
    PAUSE_CHOICE_FROM_PB,
    job_to_pb,
    network_status_to_pb,
    node_to_pb,
)
from coordinator.rpc.errors import rpc_method
from coordinator.rpc.job_waiters import JobWaiters
from coordinator.rpc.notifier import TaskNotifier
from coordinator.service import CoordinatorService
from fedtre.errors import InvalidRequest, PermissionDenied
from fedtre.identity.peer import Identity
from fedtre.v1 import jobs_pb2, jobs_pb2_grpc
from fedtre.wire import provenance_to_pb, struct_to_dict

USERS = ("researcher", "approver", "admin")
APPROVERS = ("approver", "admin")
ADMINS = ("admin",)
MAX_LIST = 1000
MAX_WAIT_SECONDS = 60.0
# A waiting GetJob reads the job again this often even unwoken: another replica or the
# expiry tick may have finished it.
RECHECK_SECONDS = 0.5


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        service: CoordinatorService,
        notifier: TaskNotifier,
        auth: Authenticator | None = None,
    ) -> None:
        self._service = service
        self._notifier = notifier
        self.auth = auth  # read by rpc_method: people authenticate with API tokens
        self._waiters = JobWaiters()
        service.on_job_changed.append(self._waiters.changed)

    async def _pbs(self, jobs: Sequence[Job]) -> list[jobs_pb2.Job]:
        """The jobs as messages, with who approved each and how many approvals it needs."""
        approvals = await asyncio.to_thread(self._service.approvals.approvals_of, jobs)
        signed = await asyncio.to_thread(
            self._service.store.governance.provenance,
            [t.task_id for job in jobs for t in job.tasks if t.output is not None],
        )
        messages = []
        for job in jobs:
            message = job_to_pb(job)
            approvers, required = approvals[job.id]
            message.approved_by.extend(approvers)
            message.approvals_required = required
            for task in message.tasks:
                if task.task_id in signed:
                    task.provenance.CopyFrom(provenance_to_pb(signed[task.task_id]))
            messages.append(message)
        return messages

    def _audit_read(self, identity: Identity, jobs: Sequence[Job], event: str) -> None:
        # Reading a finished job's results is a download, and downloads are audited.
        finished = [j.id for j in jobs if j.combined is not None]
        if finished:
            self._service.store.governance.audit(
                actor=identity.name,
                event=event,
                subject=f"job:{finished[0]}" if len(finished) == 1 else "",
                details={"jobs": finished},
                now=self._service.clock(),
            )

    @rpc_method(*USERS)
    async def SubmitJob(
        self,
        request: jobs_pb2.SubmitJobRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.SubmitJobResponse:
        spec = request.spec
        if spec.on_pause and spec.on_pause not in PAUSE_CHOICE_FROM_PB:
            raise InvalidRequest(f"unknown on_pause choice {spec.on_pause}")
        if len(request.request_id) > 64:
            raise InvalidRequest("request_id is at most 64 characters, e.g. a UUID")
        plan = await asyncio.to_thread(
            functools.partial(
                self._service.plan,
                deadline_s=spec.deadline_seconds,
                on_pause=PAUSE_CHOICE_FROM_PB.get(spec.on_pause),
            ),
            spec.analysis,
            spec.dataset,
            struct_to_dict(spec.params),
            list(spec.nodes),
            spec.project,
        )
        approvals = self._service.approvals
        scope = await asyncio.to_thread(approvals.scope_problems, identity, plan)
        # To an outsider the plan's problems would describe the project's nodes: they see
        # only that they are not a member.
        outsider = await asyncio.to_thread(approvals.is_outsider, identity, plan.spec.project)
        if request.dry_run:
            shown = scope if outsider else [*plan.problems, *scope]
            if not outsider:
                shown += await asyncio.to_thread(approvals.start_problems, plan.spec.project)
            return jobs_pb2.SubmitJobResponse(
                problems=[jobs_pb2.Problem(node=p.node, message=p.message) for p in shown]
            )
        # A member's malformed job is INVALID_ARGUMENT before it is out of scope.
        if outsider or not plan.problems:
            await asyncio.to_thread(approvals.refuse_out_of_scope, identity, scope)
            # In scope, but its project has yet to start: FAILED_PRECONDITION.
            await asyncio.to_thread(approvals.refuse_before_start, identity, plan.spec.project)
        job = await asyncio.to_thread(self._service.submit, plan, identity.name, request.request_id)
        self._notifier.wake(t.node for t in job.tasks)
        return jobs_pb2.SubmitJobResponse(job=(await self._pbs([job]))[0])

    @rpc_method(*USERS)
    async def CancelJob(
        self,
        request: jobs_pb2.CancelJobRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.CancelJobResponse:
        if len(request.reason) > 1000:
            raise InvalidRequest("the reason is at most 1000 characters")
        try:
            job = await asyncio.to_thread(
                self._service.cancel, request.job_id, identity, request.reason
            )
        except PermissionDenied:
            await asyncio.to_thread(
                self._service.store.governance.audit,
                actor=identity.name, event="access.denied", subject=f"job:{request.job_id}",
                details={"method": "CancelJob", "reason": "not the job's submitter"},
                now=self._service.clock(),
            )  # fmt: skip
            raise
        return jobs_pb2.CancelJobResponse(job=(await self._pbs([job]))[0])

    @rpc_method(*USERS)
    async def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext, identity: Identity
    ) -> jobs_pb2.GetJobResponse:
        wait = request.wait_seconds
        if not (math.isfinite(wait) and 0 <= wait <= MAX_WAIT_SECONDS):
            raise InvalidRequest(
                f"wait_seconds must be between 0 (answer at once) and {MAX_WAIT_SECONDS:g}"
            )
        remaining = context.time_remaining()
        if remaining is not None:  # answer before the caller's own deadline does
            wait = max(0.0, min(wait, remaining - 0.1))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # Registered before the first read, so a job finishing in between still wakes us;
        # no transaction is open while waiting.
        with self._waiters.watch(request.job_id) as changed:
            job = await asyncio.to_thread(self._service.job, request.job_id, identity)
            seen = _progress(job)
            while not job.state.is_final and (left := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(changed.wait(), min(left, RECHECK_SECONDS))
                except TimeoutError:
                    pass
                changed.clear()  # before the read: a change after it sets it again
                job = await asyncio.to_thread(self._service.job, request.job_id, identity)
                if request.wait_for_progress and _progress(job) != seen:
                    break
        await asyncio.to_thread(self._audit_read, identity, [job], "result.read")
        return jobs_pb2.GetJobResponse(job=(await self._pbs([job]))[0])

    @rpc_method(*USERS)
    async def ListJobs(
        self,
        request: jobs_pb2.ListJobsRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.ListJobsResponse:
        if request.limit < 0:
            raise InvalidRequest("limit must be 0 (the default, 100) or more")
        limit = min(request.limit or 100, MAX_LIST)
        state = JOB_STATE_FROM_PB.get(request.state)
        if request.state and state is None:
            raise InvalidRequest(f"unknown job state {request.state}")
        jobs = await asyncio.to_thread(
            self._service.jobs,
            state,
            limit,
            project=request.project or None,
            node=request.node or None,
            viewer=identity,
        )
        await asyncio.to_thread(self._audit_read, identity, jobs, "results.listed")
        return jobs_pb2.ListJobsResponse(jobs=await self._pbs(jobs))

    @rpc_method(*APPROVERS)
    async def ApproveJob(
        self,
        request: jobs_pb2.ApproveJobRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.ApproveJobResponse:
        job = await asyncio.to_thread(self._service.approve, request.job_id, identity.name)
        self._notifier.wake(t.node for t in job.tasks)
        return jobs_pb2.ApproveJobResponse(job=(await self._pbs([job]))[0])

    @rpc_method(*APPROVERS)
    async def RejectJob(
        self,
        request: jobs_pb2.RejectJobRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.RejectJobResponse:
        job = await asyncio.to_thread(
            self._service.reject, request.job_id, identity.name, request.reason
        )
        return jobs_pb2.RejectJobResponse(job=(await self._pbs([job]))[0])

    @rpc_method(*USERS)
    async def ListNodes(
        self,
        request: jobs_pb2.ListNodesRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.ListNodesResponse:
        nodes = await asyncio.to_thread(self._service.nodes)
        return jobs_pb2.ListNodesResponse(nodes=[node_to_pb(n) for n in nodes])

    @rpc_method(*ADMINS)
    async def GetNetworkStatus(
        self,
        request: jobs_pb2.GetNetworkStatusRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> jobs_pb2.GetNetworkStatusResponse:
        if not 0 <= request.recent_failures <= MAX_LIST:
            raise InvalidRequest(
                f"recent_failures must be between 0 (the default, 10) and {MAX_LIST}"
            )
        status = await asyncio.to_thread(
            self._service.network_status, request.recent_failures or 10
        )
        return network_status_to_pb(status)


def _progress(job: Job) -> tuple[str, int, int]:
    """What a caller following a job's progress sees change: state, round, tasks done."""
    done = sum(1 for t in job.tasks if t.output is not None)
    return (job.state.value, job.round, done)
