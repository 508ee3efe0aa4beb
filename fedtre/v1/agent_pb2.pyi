from fedtre.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenTaskStreamRequest(_message.Message):
    __slots__ = ("agent_version", "datasets", "analyses", "paused")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ANALYSES_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    datasets: _containers.RepeatedCompositeFieldContainer[_common_pb2.DatasetSpec]
    analyses: _containers.RepeatedScalarFieldContainer[str]
    paused: bool
    def __init__(self, agent_version: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[_common_pb2.DatasetSpec, _Mapping]]] = ..., analyses: _Optional[_Iterable[str]] = ..., paused: _Optional[bool] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "job_id", "node", "analysis", "dataset", "params", "project", "grant", "signature", "round")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: int
    node: str
    analysis: str
    dataset: str
    params: _struct_pb2.Struct
    project: str
    grant: bytes
    signature: bytes
    round: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[int] = ..., node: _Optional[str] = ..., analysis: _Optional[str] = ..., dataset: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., project: _Optional[str] = ..., grant: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., round: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelTask(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("checkpoint", "signature")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    checkpoint: bytes
    signature: bytes
    def __init__(self, checkpoint: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("task", "ping", "cancel", "checkpoint")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    task: Task
    ping: Ping
    cancel: CancelTask
    checkpoint: AuditCheckpoint
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., cancel: _Optional[_Union[CancelTask, _Mapping]] = ..., checkpoint: _Optional[_Union[AuditCheckpoint, _Mapping]] = ...) -> None: ...

class CountersignCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint", "signature")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    checkpoint: bytes
    signature: bytes
    def __init__(self, checkpoint: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CountersignCheckpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReportResultRequest(_message.Message):
    __slots__ = ("task_id", "outcome", "rules", "payload", "error", "provenance")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    outcome: _common_pb2.Outcome
    rules: _containers.RepeatedCompositeFieldContainer[_common_pb2.RuleCheck]
    payload: _struct_pb2.Struct
    error: str
    provenance: _common_pb2.Provenance
    def __init__(self, task_id: _Optional[str] = ..., outcome: _Optional[_Union[_common_pb2.Outcome, str]] = ..., rules: _Optional[_Iterable[_Union[_common_pb2.RuleCheck, _Mapping]]] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class ReportResultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
