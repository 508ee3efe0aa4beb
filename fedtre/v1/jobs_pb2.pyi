import datetime

from fedtre.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING_APPROVAL: _ClassVar[JobState]
    JOB_STATE_REJECTED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_PARTIAL: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_DELIVERED: _ClassVar[TaskState]
    TASK_STATE_DONE: _ClassVar[TaskState]

class PauseChoice(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAUSE_CHOICE_UNSPECIFIED: _ClassVar[PauseChoice]
    PAUSE_CHOICE_WAIT: _ClassVar[PauseChoice]
    PAUSE_CHOICE_PARTIAL: _ClassVar[PauseChoice]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING_APPROVAL: JobState
JOB_STATE_REJECTED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_PARTIAL: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_DELIVERED: TaskState
TASK_STATE_DONE: TaskState
PAUSE_CHOICE_UNSPECIFIED: PauseChoice
PAUSE_CHOICE_WAIT: PauseChoice
PAUSE_CHOICE_PARTIAL: PauseChoice

class JobSpec(_message.Message):
    __slots__ = ("analysis", "dataset", "params", "nodes", "project", "deadline_seconds", "on_pause")
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ON_PAUSE_FIELD_NUMBER: _ClassVar[int]
    analysis: str
    dataset: str
    params: _struct_pb2.Struct
    nodes: _containers.RepeatedScalarFieldContainer[str]
    project: str
    deadline_seconds: int
    on_pause: PauseChoice
    def __init__(self, analysis: _Optional[str] = ..., dataset: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., nodes: _Optional[_Iterable[str]] = ..., project: _Optional[str] = ..., deadline_seconds: _Optional[int] = ..., on_pause: _Optional[_Union[PauseChoice, str]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "dry_run", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    dry_run: bool
    request_id: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., dry_run: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("node", "message")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    message: str
    def __init__(self, node: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job", "problems")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "node", "state", "outcome", "rules", "payload", "error", "provenance")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    node: str
    state: TaskState
    outcome: _common_pb2.Outcome
    rules: _containers.RepeatedCompositeFieldContainer[_common_pb2.RuleCheck]
    payload: _struct_pb2.Struct
    error: str
    provenance: _common_pb2.Provenance
    def __init__(self, task_id: _Optional[str] = ..., node: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., outcome: _Optional[_Union[_common_pb2.Outcome, str]] = ..., rules: _Optional[_Iterable[_Union[_common_pb2.RuleCheck, _Mapping]]] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "submitted_by", "decided_by", "reason", "created_at", "updated_at", "tasks", "combined", "approved_by", "approvals_required", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    COMBINED_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: int
    spec: JobSpec
    state: JobState
    submitted_by: str
    decided_by: str
    reason: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    combined: _struct_pb2.Struct
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    approvals_required: int
    progress: JobProgress
    def __init__(self, id: _Optional[int] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., submitted_by: _Optional[str] = ..., decided_by: _Optional[str] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., combined: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., approved_by: _Optional[_Iterable[str]] = ..., approvals_required: _Optional[int] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("round", "max_rounds", "figures")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    round: int
    max_rounds: int
    figures: _struct_pb2.Struct
    def __init__(self, round: _Optional[int] = ..., max_rounds: _Optional[int] = ..., figures: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "wait_seconds", "wait_for_progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    wait_seconds: float
    wait_for_progress: bool
    def __init__(self, job_id: _Optional[int] = ..., wait_seconds: _Optional[float] = ..., wait_for_progress: _Optional[bool] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "limit", "project", "node")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    limit: int
    project: str
    node: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., limit: _Optional[int] = ..., project: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ApproveJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    def __init__(self, job_id: _Optional[int] = ...) -> None: ...

class ApproveJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class RejectJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    reason: str
    def __init__(self, job_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "online", "last_seen", "datasets", "analyses", "paused")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ANALYSES_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    online: bool
    last_seen: _timestamp_pb2.Timestamp
    datasets: _containers.RepeatedCompositeFieldContainer[_common_pb2.DatasetSpec]
    analyses: _containers.RepeatedScalarFieldContainer[str]
    paused: bool
    def __init__(self, node_id: _Optional[str] = ..., online: _Optional[bool] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., datasets: _Optional[_Iterable[_Union[_common_pb2.DatasetSpec, _Mapping]]] = ..., analyses: _Optional[_Iterable[str]] = ..., paused: _Optional[bool] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    reason: str
    def __init__(self, job_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetNetworkStatusRequest(_message.Message):
    __slots__ = ("recent_failures",)
    RECENT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    recent_failures: int
    def __init__(self, recent_failures: _Optional[int] = ...) -> None: ...

class NodeQueue(_message.Message):
    __slots__ = ("node_id", "online", "last_seen", "queued", "delivered", "oldest_queued_at", "oldest_delivered_at", "agent_version", "certificate_not_after")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_QUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    online: bool
    last_seen: _timestamp_pb2.Timestamp
    queued: int
    delivered: int
    oldest_queued_at: _timestamp_pb2.Timestamp
    oldest_delivered_at: _timestamp_pb2.Timestamp
    agent_version: str
    certificate_not_after: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., online: _Optional[bool] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queued: _Optional[int] = ..., delivered: _Optional[int] = ..., oldest_queued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., oldest_delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_version: _Optional[str] = ..., certificate_not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobStateCount(_message.Message):
    __slots__ = ("state", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    count: int
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class TaskFailure(_message.Message):
    __slots__ = ("task_id", "job_id", "node", "analysis", "outcome", "error", "reported_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: int
    node: str
    analysis: str
    outcome: _common_pb2.Outcome
    error: str
    reported_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[int] = ..., node: _Optional[str] = ..., analysis: _Optional[str] = ..., outcome: _Optional[_Union[_common_pb2.Outcome, str]] = ..., error: _Optional[str] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetNetworkStatusResponse(_message.Message):
    __slots__ = ("nodes", "jobs", "recent_failures")
    NODES_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeQueue]
    jobs: _containers.RepeatedCompositeFieldContainer[JobStateCount]
    recent_failures: _containers.RepeatedCompositeFieldContainer[TaskFailure]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeQueue, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[JobStateCount, _Mapping]]] = ..., recent_failures: _Optional[_Iterable[_Union[TaskFailure, _Mapping]]] = ...) -> None: ...
