from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_RELEASED: _ClassVar[Outcome]
    OUTCOME_SUPPRESSED: _ClassVar[Outcome]
    OUTCOME_BLOCKED: _ClassVar[Outcome]
    OUTCOME_REFUSED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
    OUTCOME_HELD: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_RELEASED: Outcome
OUTCOME_SUPPRESSED: Outcome
OUTCOME_BLOCKED: Outcome
OUTCOME_REFUSED: Outcome
OUTCOME_FAILED: Outcome
OUTCOME_HELD: Outcome

class ColumnSpec(_message.Message):
    __slots__ = ("name", "type", "grid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    grid: float
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., grid: _Optional[float] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("name", "columns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSpec]
    def __init__(self, name: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[ColumnSpec, _Mapping]]] = ...) -> None: ...

class RuleCheck(_message.Message):
    __slots__ = ("rule", "passed", "detail")
    RULE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rule: str
    passed: bool
    detail: str
    def __init__(self, rule: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("agent_version", "dataset_version", "statement", "signature", "certificate")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    dataset_version: str
    statement: bytes
    signature: bytes
    certificate: bytes
    def __init__(self, agent_version: _Optional[str] = ..., dataset_version: _Optional[str] = ..., statement: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...
