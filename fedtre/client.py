"""The researcher's Python client: submit analyses, follow jobs, read combined results."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from fedtre.analyses import CATALOGUE, get_analysis
from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome
from fedtre.analyses.cox import CoxFit
from fedtre.analyses.regression import ModelFit
from fedtre.catalogue.entry import CatalogueEntry, in_order
from fedtre.credentials import person_credentials
from fedtre.disclosure.release import Kind
from fedtre.errors import Conflict, FedtreError, InvalidRequest, Unavailable
from fedtre.identity.diagnose import diagnose
from fedtre.identity.provenance import Provenance, Statement
from fedtre.identity.provenance import verify as verify_provenance
from fedtre.identity.tls import DEFAULT_CHANNEL_OPTIONS, TlsFiles
from fedtre.status import error_from_rpc
from fedtre.v1 import jobs_pb2, jobs_pb2_grpc
from fedtre.wire import (
    OUTCOME_FROM_PB,
    dict_to_struct,
    output_from_parts,
    provenance_from_pb,
    schemas_from_pb,
    struct_to_dict,
)

JOB_STATES = {
    jobs_pb2.JOB_STATE_PENDING_APPROVAL: "pending_approval",
    jobs_pb2.JOB_STATE_REJECTED: "rejected",
    jobs_pb2.JOB_STATE_RUNNING: "running",
    jobs_pb2.JOB_STATE_COMPLETED: "completed",
    jobs_pb2.JOB_STATE_PARTIAL: "partial",
    jobs_pb2.JOB_STATE_FAILED: "failed",
    jobs_pb2.JOB_STATE_CANCELLED: "cancelled",
}
JOB_STATE_VALUES = {v: k for k, v in JOB_STATES.items()}
# States of a job whose tasks were sent: only these have made progress (round k of N).
_RAN = frozenset(
    {jobs_pb2.JOB_STATE_RUNNING, jobs_pb2.JOB_STATE_COMPLETED, jobs_pb2.JOB_STATE_PARTIAL,
     jobs_pb2.JOB_STATE_FAILED}
)  # fmt: skip
FINISHED = frozenset({"rejected", "completed", "partial", "failed", "cancelled"})
PAUSE_CHOICES = {"wait": jobs_pb2.PAUSE_CHOICE_WAIT, "partial": jobs_pb2.PAUSE_CHOICE_PARTIAL}
TASK_STATES = {
    jobs_pb2.TASK_STATE_QUEUED: "queued",
    jobs_pb2.TASK_STATE_DELIVERED: "delivered",
    jobs_pb2.TASK_STATE_DONE: "done",
}


@dataclass(frozen=True)
class NodeResult:
    """One node's part of a job: its outcome, the rules checked, and what it released."""

    node: str
    task_id: str
    state: str
    output: NodeOutput | None
    analysis: str
    params: Mapping[str, Any]
    # The releasing agent's signed provenance (fedtre.identity.provenance); see verify().
    provenance: Provenance | None = None

    def __repr__(self) -> str:
        # short: the provenance holds a certificate chain, the payload can be large
        return f"<NodeResult {self.node}: {self.outcome}>"

    def verify(self, ca: str | Path) -> Statement:
        """Check this output is exactly what its node's agent released and signed.

        ca is the network CA certificate (ca.pem). Returns the signed statement (agent
        version, declared dataset version, task, job...); raises ProvenanceError, also when
        the rules shown differ from those the agent signed.
        """
        return verify_provenance(
            self.provenance,
            Path(ca).read_bytes(),
            node=self.node,
            task_id=self.task_id,
            payload=self.payload,
            rules=self.rules,
            params=self.params,
        )

    @property
    def outcome(self) -> str:
        """released, suppressed, blocked, refused, failed, or held (for the TRE's output
        checker; a final outcome follows); "pending" until the node reports."""
        return self.output.outcome.value if self.output else "pending"

    @property
    def rules(self) -> tuple[Any, ...]:
        return self.output.rules if self.output else ()

    @property
    def payload(self) -> dict[str, Any]:
        return self.output.payload if self.output else {}

    @property
    def error(self) -> str:
        return self.output.error if self.output else ""

    @property
    def table(self) -> Any:
        """The node's released table as a DataFrame (withheld cells <NA>), or None."""
        if not self.payload:
            return None
        return get_analysis(self.analysis).to_frame(self.params, self.payload)


@dataclass(frozen=True)
class JobProgress:
    """How far a multi-round job (e.g. glm) has got: round k of at most max_rounds.

    figures: the latest combined round's figures, e.g. {"iteration": 3, "deviance": 812.4}.
    """

    round: int
    max_rounds: int
    figures: dict[str, Any]

    def describe(self) -> str:
        """e.g. "round 3 of at most 25, deviance 812.4" (cox: "log-likelihood -534.1")."""
        text = f"round {self.round} of at most {self.max_rounds}"
        deviance = self.figures.get("deviance")
        if isinstance(deviance, int | float):
            text += f", deviance {deviance:.8g}"
        log_likelihood = self.figures.get("log_likelihood")
        if isinstance(log_likelihood, int | float):
            text += f", log-likelihood {log_likelihood:.8g}"
        return text


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job as the coordinator reports it."""

    id: int
    analysis: str
    dataset: str
    params: dict[str, Any]
    nodes: tuple[str, ...]
    project: str
    state: str
    submitted_by: str
    decided_by: str
    reason: str
    created_at: datetime
    updated_at: datetime
    tasks: dict[str, NodeResult]
    combined: dict[str, Any] | None
    # Who approved the job so far, and how many approvals its project requires.
    approved_by: tuple[str, ...] = ()
    approvals_required: int = 1
    # Multi-round analyses (glm): round k of at most N, and the latest round's figures.
    progress: JobProgress | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def done_count(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state == "done")

    @property
    def held_count(self) -> int:
        """Nodes whose output waits for their TRE's output checker (the job waits too)."""
        return sum(1 for t in self.tasks.values() if t.state == "held")

    @property
    def cause(self) -> str:
        """Why the job has no complete result, stated once ("" when it completed)."""
        from fedtre.notebook import cause

        return cause(self)

    def __repr__(self) -> str:
        from fedtre.notebook import job_repr

        return job_repr(self)

    def _repr_html_(self) -> str:
        from fedtre.notebook import job_html

        return job_html(self)


@dataclass(frozen=True)
class Result:
    """A finished job's combined answer and each node's outcome."""

    job: JobStatus

    @property
    def state(self) -> str:
        return self.job.state

    @property
    def combined(self) -> dict[str, Any]:
        return self.job.combined or {}

    @property
    def nodes(self) -> dict[str, NodeResult]:
        return self.job.tasks

    def to_frame(self) -> Any:
        """The combined result as a pandas DataFrame, or None when it is not tabular or
        there is nothing combined (a rejected or failed job)."""
        if not self.combined or "error" in self.combined:
            return None
        return get_analysis(self.job.analysis).to_frame(self.job.params, self.combined)

    def summary(self) -> Any:
        """A statsmodels-style summary of a fitted model (linear_regression, glm): model
        figures, the coefficient table, and odds ratios (binomial) or rate ratios
        (Poisson) with 95% CIs (fedtre.model_summary.ModelSummary; print it, or show it
        in a notebook). Raises InvalidRequest for a result without a model."""
        from fedtre.model_summary import model_summary, require_model

        require_model(self.job.analysis, self.combined)
        model = self.model
        if not isinstance(model, ModelFit):
            raise InvalidRequest(
                f"summary() is for linear_regression and glm results; a {self.job.analysis} "
                "result's to_frame() holds its table (hazard ratios with CIs for cox) and "
                ".model its figures"
            )
        frame = self.to_frame()
        assert frame is not None  # require_model checked it
        warning = self.combined.get("warning")
        outcome = str(self.combined.get("outcome") or self.job.params.get("outcome") or "")
        return model_summary(frame, model, outcome, str(warning) if warning else None)

    def odds_ratios(self) -> Any:
        """A binomial glm's odds ratios, exp(coef), with 95% CIs, by term (no intercept):
        a DataFrame with odds_ratio, ci_lower, ci_upper. Raises InvalidRequest otherwise."""
        from fedtre.model_summary import exp_table, require_model

        require_model(self.job.analysis, self.combined)
        model = self.model
        if not isinstance(model, ModelFit) or model.family != "binomial":
            raise InvalidRequest("odds ratios are for binomial glm results (family='binomial')")
        return exp_table(self.to_frame(), "odds_ratio")

    @property
    def cause(self) -> str:
        """Why the job has no complete result, stated once ("" when it completed)."""
        return self.job.cause

    def __repr__(self) -> str:
        from fedtre.notebook import result_repr

        return result_repr(self)

    def _repr_html_(self) -> str:
        from fedtre.notebook import result_html

        return result_html(self)

    @property
    def model(self) -> ModelFit | CoxFit | None:
        """A fitted model's figures: for linear_regression and glm, n, df_model, df_resid,
        deviance, iterations, converged, r_squared... (fedtre.analyses.regression.ModelFit);
        for cox, n, events, log partial likelihood, partial AIC (fedtre.analyses.cox.CoxFit);
        None for other analyses or when no model was combined."""
        model = self.combined.get("model")
        if not isinstance(model, Mapping):
            return None
        if model.get("kind") == "cox":
            return CoxFit.from_payload(model)
        return ModelFit.from_payload(model)


@dataclass(frozen=True)
class DryRun:
    """What a dry run found: no problems means the job would be accepted."""

    problems: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    online: bool
    last_seen: datetime | None
    datasets: tuple[DatasetSchema, ...]
    analyses: tuple[str, ...]
    # Paused for maintenance by its TRE: its tasks wait (or the job goes on without it).
    paused: bool = False

    @property
    def status(self) -> str:
        """online, paused or offline."""
        if not self.online:
            return "offline"
        return "paused" if self.paused else "online"


@dataclass(frozen=True)
class NodeQueue:
    """One node's connection and its tasks: queued (waiting) and delivered (unanswered)."""

    node_id: str
    online: bool
    last_seen: datetime | None
    queued: int
    delivered: int
    oldest_queued_at: datetime | None
    oldest_delivered_at: datetime | None
    # The agent's version and its certificate's expiry, as of its last connection.
    agent_version: str = ""
    certificate_not_after: datetime | None = None


@dataclass(frozen=True)
class TaskFailure:
    """A task a node reported as failed or refused, with the node's public message."""

    task_id: str
    job_id: int
    node: str
    analysis: str
    outcome: str
    error: str
    reported_at: datetime | None


@dataclass(frozen=True)
class NetworkStatus:
    """The network at a glance (times are naive UTC, as elsewhere in the client)."""

    nodes: tuple[NodeQueue, ...]
    jobs: dict[str, int]
    recent_failures: tuple[TaskFailure, ...]


class JobHandle:
    """A submitted job: poll it, wait for it, read its result."""

    def __init__(self, client: Client, job_id: int) -> None:
        self._client = client
        self.id = job_id

    def __repr__(self) -> str:
        # no call to the coordinator here: .status() and .result() ask it
        return f"<JobHandle {self.id}: .status(), .wait(progress=True), .result()>"

    def status(self) -> JobStatus:
        return self._client.job(self.id)

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[JobStatus], None] | bool | None = None,
    ) -> JobStatus:
        """Block until the job is finished; return its status.

        progress: True draws a one-line progress bar (rounds of a glm, else nodes that
        answered; fedtre.progress), or a callable is called with each new status.
        Raises TimeoutError after timeout seconds.
        """
        if progress is True:
            from fedtre.progress import JobProgressBar

            with JobProgressBar(self.id) as bar:
                return self.wait(timeout, progress=bar.update)
        if progress is False:
            progress = None
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        last: tuple[str, int, int, int] | None = None
        # The coordinator holds each GetJob until the job finishes (or, with a progress
        # callback, progresses) or `wait` passes, so the result arrives as soon as it
        # exists; never longer than half the call's own timeout.
        longest = min(10.0, self._client.timeout / 2)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            wait = longest if left is None else max(0.0, min(longest, left))
            asked = time.monotonic()
            status = self._client.job(self.id, wait=wait, progress=progress is not None)
            round_ = status.progress.round if status.progress is not None else 0
            seen = (status.state, status.done_count, status.held_count, round_)
            changed, last = seen != last, seen
            if progress is not None and changed:
                progress(status)
            if status.finished:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {self.id} is still {status.state.replace('_', ' ')} after {timeout} s; "
                    f"follow it with `fedtre result {self.id} --wait`"
                )
            if not changed and time.monotonic() - asked < wait / 2:
                # Answered early with nothing new: a coordinator that does not wait (older
                # than wait_seconds). Poll it with a growing sleep, as before.
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)

    def result(self, timeout: float | None = None, *, progress: bool = False) -> Result:
        """Wait for the job and return its result; raise Conflict if it was rejected.

        progress: draw a one-line progress bar while waiting (see wait)."""
        status = self.wait(timeout, progress=progress)
        if status.state == "rejected":
            raise Conflict(f"job {self.id} was rejected by {status.decided_by}: {status.reason}")
        return Result(status)


class Client:
    """A connection to a coordinator over TLS, authenticated with an API token.

        Client("coordinator.example.org:50052", ca="ca.pem", token=token)
        Client("coordinator.example.org:50052", "pki/users/alice")  # folder: ca.pem, token

    identity is an identity folder (fedtre.credentials) or TlsFiles; token and ca override
    the folder's. With a client certificate in the folder, the connection is mutual TLS
    (the coordinator's agent port accepts people that way too).
    """

    def __init__(
        self,
        target: str,
        identity: TlsFiles | str | Path | None = None,
        *,
        token: str | None = None,
        ca: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        credentials = person_credentials(identity, token=token, ca=ca)
        self._channel = grpc.secure_channel(
            target, credentials, options=list(DEFAULT_CHANNEL_OPTIONS)
        )
        self._target = target
        self._files = _probe_files(identity, ca)
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._timeout = timeout
        self._admin: Any = None
        self._applications: Any = None
        self.target = target

    def __repr__(self) -> str:
        return f"<fedtre.Client {self.target}>"

    def _repr_html_(self) -> str:
        from fedtre.notebook import client_html

        return client_html(self.target)

    @property
    def admin(self) -> Any:
        """People, tokens, projects and the audit log (fedtre.admin_client.AdminClient)."""
        if self._admin is None:
            from fedtre.admin_client import AdminClient

            self._admin = AdminClient(self._channel, self._timeout, self._error)
        return self._admin

    @property
    def applications(self) -> Any:
        """Data Access Requests and the committee's decisions
        (fedtre.applications_client.ApplicationsClient)."""
        if self._applications is None:
            from fedtre.applications_client import ApplicationsClient

            self._applications = ApplicationsClient(self._channel, self._timeout)
        return self._applications

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> FedtreError:
        """The error for a failed call; when the coordinator cannot be reached, with why
        (fedtre.identity.diagnose) and what to do about it."""
        error = error_from_rpc(exc)
        if exc.code() != grpc.StatusCode.UNAVAILABLE or self._files is None:  # type: ignore[attr-defined]
            return error
        ca, cert, key = self._files
        found = diagnose(self._target, ca, cert=cert, key=key)
        return Unavailable(found) if found else error

    def submit(
        self,
        analysis: str,
        *,
        dataset: str,
        params: Mapping[str, Any] | None = None,
        nodes: Sequence[str] | None = None,
        project: str = "default",
        dry_run: bool = False,
        deadline: float | None = None,
        on_pause: str | None = None,
        request_id: str = "",
    ) -> Any:
        """Submit an analysis; return a JobHandle, or a DryRun report when dry_run is set.

        deadline: seconds each node has to answer (default: the coordinator's); on_pause:
        "wait" for a node paused for maintenance, or "partial" to finish without it.
        request_id: an idempotency key; resubmitting with it returns the same job.
        Raises InvalidRequest listing every problem when the coordinator refuses the job.
        """
        if on_pause is not None and on_pause not in PAUSE_CHOICES:
            raise InvalidRequest(f"on_pause is one of {sorted(PAUSE_CHOICES)}, not {on_pause!r}")
        if isinstance(nodes, str):
            raise InvalidRequest("nodes must be a list of node ids, e.g. nodes=['tre-a', 'tre-b']")
        spec = jobs_pb2.JobSpec(
            analysis=analysis,
            dataset=dataset,
            params=dict_to_struct(params or {}),
            nodes=list(nodes or []),
            project=project,
            deadline_seconds=int(deadline or 0),
            on_pause=PAUSE_CHOICES.get(on_pause or "", jobs_pb2.PAUSE_CHOICE_UNSPECIFIED),
        )
        request = jobs_pb2.SubmitJobRequest(spec=spec, dry_run=dry_run, request_id=request_id)
        response = self._call("SubmitJob", request)
        if dry_run:
            return DryRun(tuple((p.node, p.message) for p in response.problems))
        return JobHandle(self, response.job.id)

    @property
    def timeout(self) -> float:
        """Seconds each call may take."""
        return self._timeout

    def job(self, job_id: int, *, wait: float = 0.0, progress: bool = False) -> JobStatus:
        """The job's status; with wait, once it finishes or after wait seconds (at most 60).

        progress: with wait, answer also as soon as the job's progress changes.
        """
        request = jobs_pb2.GetJobRequest(
            job_id=job_id, wait_seconds=wait, wait_for_progress=progress
        )
        return _job_status(self._call("GetJob", request).job)

    def handle(self, job_id: int) -> JobHandle:
        return JobHandle(self, job_id)

    def jobs(
        self,
        state: str | None = None,
        limit: int = 100,
        *,
        project: str | None = None,
        node: str | None = None,
    ) -> list[JobStatus]:
        """Return the newest jobs, optionally only those in state, of project, or addressed to node."""
        if state is not None and state not in JOB_STATE_VALUES:
            raise InvalidRequest(
                f"unknown job state '{state}'; use one of {sorted(JOB_STATE_VALUES)}"
            )
        request = jobs_pb2.ListJobsRequest(
            state=JOB_STATE_VALUES.get(state or "", jobs_pb2.JOB_STATE_UNSPECIFIED),
            limit=limit,
            project=project or "",
            node=node or "",
        )
        return [_job_status(j) for j in self._call("ListJobs", request).jobs]

    def network_status(self, recent_failures: int = 10) -> NetworkStatus:
        """Return nodes with their queues, jobs by state and the latest task failures (admin)."""
        request = jobs_pb2.GetNetworkStatusRequest(recent_failures=recent_failures)
        response = self._call("GetNetworkStatus", request)
        return NetworkStatus(
            nodes=tuple(
                NodeQueue(
                    node_id=n.node_id,
                    online=n.online,
                    last_seen=_datetime(n, "last_seen"),
                    queued=n.queued,
                    delivered=n.delivered,
                    oldest_queued_at=_datetime(n, "oldest_queued_at"),
                    oldest_delivered_at=_datetime(n, "oldest_delivered_at"),
                    agent_version=n.agent_version,
                    certificate_not_after=_datetime(n, "certificate_not_after"),
                )
                for n in response.nodes
            ),
            jobs={JOB_STATES.get(c.state, "unknown"): c.count for c in response.jobs},
            recent_failures=tuple(
                TaskFailure(
                    task_id=f.task_id,
                    job_id=f.job_id,
                    node=f.node,
                    analysis=f.analysis,
                    outcome=_outcome_name(f.outcome),
                    error=f.error,
                    reported_at=_datetime(f, "reported_at"),
                )
                for f in response.recent_failures
            ),
        )

    def approve(self, job_id: int) -> JobStatus:
        return _job_status(self._call("ApproveJob", jobs_pb2.ApproveJobRequest(job_id=job_id)).job)

    def reject(self, job_id: int, reason: str) -> JobStatus:
        request = jobs_pb2.RejectJobRequest(job_id=job_id, reason=reason)
        return _job_status(self._call("RejectJob", request).job)

    def cancel(self, job_id: int, reason: str = "") -> JobStatus:
        """Cancel a job that has not finished (its submitter, approvers, admins)."""
        request = jobs_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        return _job_status(self._call("CancelJob", request).job)

    def catalogue(self) -> list[CatalogueEntry]:
        """Return every dataset every node advertises, with its operator's description.

        One entry per dataset per node, sorted by dataset then node. Everything in it was
        declared by the TRE (schema, description, codebook), never read from the data.
        """
        return in_order(
            CatalogueEntry(node=n.node_id, online=n.online, dataset=d)
            for n in self.nodes()
            for d in n.datasets
        )

    def nodes(self) -> list[NodeStatus]:
        response = self._call("ListNodes", jobs_pb2.ListNodesRequest())
        return [
            NodeStatus(
                node_id=n.node_id,
                online=n.online,
                last_seen=n.last_seen.ToDatetime() if n.HasField("last_seen") else None,
                datasets=tuple(schemas_from_pb(n.datasets)),
                analyses=tuple(n.analyses),
                paused=n.paused,
            )
            for n in response.nodes
        ]


def _probe_files(
    identity: TlsFiles | str | Path | None, ca: str | Path | None
) -> tuple[Path, Path | None, Path | None] | None:
    """(CA, client certificate, key) as person_credentials uses them, for diagnose()."""
    files = TlsFiles.from_dir(identity) if isinstance(identity, str | Path) else identity
    mutual = files is not None and files.cert.is_file() and files.key.is_file()
    if ca is None and files is not None and mutual:
        return files.ca, files.cert, files.key
    ca_file = Path(ca) if ca is not None else (files.ca if files is not None else None)
    return (ca_file, None, None) if ca_file is not None else None


def _whole_counts(analysis: str, values: dict[str, Any]) -> dict[str, Any]:
    """values with each top-level count (a "count" of the analysis's released_fields) as
    an int: the wire's Struct carries every number as a double (4000 arrives as 4000.0)."""
    found = CATALOGUE.get(analysis)
    if found is None:
        return values
    counts = {path for path, kind in found.released_fields.items() if kind == Kind.COUNT}
    return {
        k: int(v) if k in counts and isinstance(v, float) and v.is_integer() else v
        for k, v in values.items()
    }


def _job_status(job: jobs_pb2.Job) -> JobStatus:
    params = struct_to_dict(job.spec.params)
    tasks = {}
    for t in job.tasks:
        output = None
        if t.outcome:
            try:
                output = output_from_parts(t.outcome, t.rules, t.payload, t.error)
            except FedtreError:
                output = None
            if output is not None:
                output = replace(output, payload=_whole_counts(job.spec.analysis, output.payload))
        state = TASK_STATES.get(t.state, "unknown")
        if output is not None and output.outcome is Outcome.HELD:
            state = "held"  # the wire has no held task state; the outcome says it
        tasks[t.node] = NodeResult(
            t.node,
            t.task_id,
            state,
            output,
            job.spec.analysis,
            params,
            provenance_from_pb(t.provenance) if t.HasField("provenance") else None,
        )
    return JobStatus(
        id=job.id,
        analysis=job.spec.analysis,
        dataset=job.spec.dataset,
        params=params,
        nodes=tuple(job.spec.nodes),
        project=job.spec.project,
        state=JOB_STATES.get(job.state, "unknown"),
        submitted_by=job.submitted_by,
        decided_by=job.decided_by,
        reason=job.reason,
        created_at=job.created_at.ToDatetime(),
        updated_at=job.updated_at.ToDatetime(),
        tasks=tasks,
        combined=(
            _whole_counts(job.spec.analysis, struct_to_dict(job.combined))
            if job.HasField("combined")
            else None
        ),
        approved_by=tuple(job.approved_by),
        approvals_required=job.approvals_required or 1,
        progress=JobProgress(
            job.progress.round, job.progress.max_rounds, struct_to_dict(job.progress.figures)
        )
        if job.HasField("progress") and job.state in _RAN
        else None,
    )


def _datetime(message: Any, field: str) -> datetime | None:
    return getattr(message, field).ToDatetime() if message.HasField(field) else None


def _outcome_name(value: int) -> str:
    outcome = OUTCOME_FROM_PB.get(value)  # type: ignore[call-overload]
    return outcome.value if outcome is not None else "unknown"
