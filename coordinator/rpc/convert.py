"""Conversion between fedtre.v1 messages and the coordinator's domain objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from coordinator.domain import rounds
from coordinator.domain.model import Job, JobState, Node, PauseChoice, Task, TaskState
from coordinator.domain.status import NetworkStatus
from fedtre.disclosure.release import researcher_view
from fedtre.errors import InvalidRequest
from fedtre.v1 import agent_pb2, jobs_pb2
from fedtre.wire import OUTCOME_TO_PB, dict_to_struct, rules_to_pb, schema_to_pb

JOB_STATE_TO_PB = {
    JobState.PENDING_APPROVAL: jobs_pb2.JOB_STATE_PENDING_APPROVAL,
    JobState.REJECTED: jobs_pb2.JOB_STATE_REJECTED,
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.COMPLETED: jobs_pb2.JOB_STATE_COMPLETED,
    JobState.PARTIAL: jobs_pb2.JOB_STATE_PARTIAL,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
}
JOB_STATE_FROM_PB = {v: k for k, v in JOB_STATE_TO_PB.items()}

PAUSE_CHOICE_TO_PB = {
    PauseChoice.WAIT: jobs_pb2.PAUSE_CHOICE_WAIT,
    PauseChoice.PARTIAL: jobs_pb2.PAUSE_CHOICE_PARTIAL,
}
# Unset (0) is the coordinator's default; unknown values are refused by the servicer.
PAUSE_CHOICE_FROM_PB = {v: k for k, v in PAUSE_CHOICE_TO_PB.items()}

TASK_STATE_TO_PB = {
    TaskState.QUEUED: jobs_pb2.TASK_STATE_QUEUED,
    TaskState.DELIVERED: jobs_pb2.TASK_STATE_DELIVERED,
    TaskState.DONE: jobs_pb2.TASK_STATE_DONE,
    # jobs.proto has no held state: a held task is delivered with outcome OUTCOME_HELD.
    TaskState.HELD: jobs_pb2.TASK_STATE_DELIVERED,
}


# What google.protobuf.Timestamp can hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name


def check_well_known(message: Message, path: str = "") -> None:
    """Raise InvalidRequest for any Timestamp out of range or Struct JSON cannot hold.

    Walks every field that is set, so a request is checked once, at the boundary, before
    any servicer converts it: a bad value is the caller's error, never INTERNAL.
    """
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}{field.name}"
        if field.message_type.GetOptions().map_entry:
            entry_value = field.message_type.fields_by_name["value"]
            if entry_value.message_type is not None:
                for key, item in value.items():
                    _check_one(item, f"{where}[{key!r}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_one(item, f"{where}[{index}]")
        else:
            _check_one(value, where)


def _check_one(message: Message, where: str) -> None:
    name = message.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        ts: Any = message
        if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS:
            raise InvalidRequest(
                f"{where} is not a valid time: {ts.seconds} seconds is outside "
                "0001-01-01 to 9999-12-31 UTC; send a date in that range"
            )
        if not 0 <= ts.nanos <= 999_999_999:
            raise InvalidRequest(
                f"{where} is not a valid time: nanos must be 0 to 999999999, not {ts.nanos}"
            )
    elif name == _STRUCT:
        try:
            json_format.MessageToDict(message)
        except (ValueError, RecursionError):
            raise InvalidRequest(
                f"{where} is not valid JSON: numbers must be finite (no NaN or infinity)"
            ) from None
    elif not name.startswith("google.protobuf."):
        check_well_known(message, f"{where}.")


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def task_to_pb(
    task: Task, job: Job, grant: bytes = b"", signature: bytes = b""
) -> agent_pb2.AgentMessage:
    """The task message; grant and signature are its signed approval (coordinator.approvals)."""
    message = agent_pb2.AgentMessage(
        task=agent_pb2.Task(
            task_id=task.task_id,
            job_id=job.id,
            node=task.node,
            analysis=job.spec.analysis,
            dataset=job.spec.dataset,
            params=dict_to_struct(job.spec.params),
            project=job.spec.project,
            grant=grant,
            signature=signature,
        )
    )
    round_params = rounds.task_round_params(job)
    if round_params is not None:
        message.task.round.CopyFrom(dict_to_struct(round_params))
    return message


def _task_status_to_pb(task: Task, analysis: str) -> jobs_pb2.TaskStatus:
    status = jobs_pb2.TaskStatus(
        task_id=task.task_id, node=task.node, state=TASK_STATE_TO_PB[task.state]
    )
    if task.output is not None:
        status.outcome = OUTCOME_TO_PB[task.output.outcome]
        status.rules.extend(rules_to_pb(task.output))
        # Model statistics stay with the coordinator's combination (release.researcher_view).
        status.payload.CopyFrom(dict_to_struct(researcher_view(analysis, task.output.payload)))
        status.error = task.output.error
    return status


def job_to_pb(job: Job) -> jobs_pb2.Job:
    message = jobs_pb2.Job(
        id=job.id,
        spec=jobs_pb2.JobSpec(
            analysis=job.spec.analysis,
            dataset=job.spec.dataset,
            params=dict_to_struct(job.spec.params),
            nodes=list(job.spec.nodes),
            project=job.spec.project,
            deadline_seconds=job.spec.deadline_s,
            on_pause=PAUSE_CHOICE_TO_PB[job.spec.on_pause],
        ),
        state=JOB_STATE_TO_PB[job.state],
        submitted_by=job.submitted_by,
        decided_by=job.decided_by,
        reason=job.reason,
        created_at=_timestamp(job.created_at),
        updated_at=_timestamp(job.updated_at),
        tasks=[_task_status_to_pb(t, job.spec.analysis) for t in job.tasks],
    )
    if job.combined is not None:
        message.combined.CopyFrom(dict_to_struct(job.combined))
    progress = rounds.progress(job)
    if progress is not None:
        message.progress.CopyFrom(
            jobs_pb2.JobProgress(
                round=progress.round,
                max_rounds=progress.max_rounds,
                figures=dict_to_struct(progress.figures),
            )
        )
    return message


def node_to_pb(node: Node) -> jobs_pb2.NodeInfo:
    return jobs_pb2.NodeInfo(
        node_id=node.node_id,
        online=node.online,
        last_seen=_timestamp(node.last_seen),
        datasets=[schema_to_pb(d) for d in node.datasets],
        analyses=list(node.analyses),
        paused=node.paused,
    )


def network_status_to_pb(status: NetworkStatus) -> jobs_pb2.GetNetworkStatusResponse:
    return jobs_pb2.GetNetworkStatusResponse(
        nodes=[
            jobs_pb2.NodeQueue(
                node_id=n.node_id,
                online=n.online,
                last_seen=_timestamp(n.last_seen),
                queued=n.queued,
                delivered=n.delivered,
                oldest_queued_at=_timestamp(n.oldest_queued_at),
                oldest_delivered_at=_timestamp(n.oldest_delivered_at),
                agent_version=n.agent_version,
                certificate_not_after=_timestamp(n.certificate_not_after),
            )
            for n in status.nodes
        ],
        jobs=[
            jobs_pb2.JobStateCount(state=JOB_STATE_TO_PB[state], count=count)
            for state, count in status.jobs_by_state.items()
        ],
        recent_failures=[
            jobs_pb2.TaskFailure(
                task_id=f.task_id,
                job_id=f.job_id,
                node=f.node,
                analysis=f.analysis,
                outcome=OUTCOME_TO_PB[f.outcome],
                error=f.error,
                reported_at=_timestamp(f.reported_at),
            )
            for f in status.recent_failures
        ],
    )
