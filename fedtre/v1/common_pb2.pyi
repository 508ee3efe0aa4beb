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
    __slots__ = ("name", "type", "grid", "description", "unit", "value_labels", "sensitive")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_LABELS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    grid: float
    description: str
    unit: str
    value_labels: _containers.RepeatedCompositeFieldContainer[ValueLabel]
    sensitive: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., grid: _Optional[float] = ..., description: _Optional[str] = ..., unit: _Optional[str] = ..., value_labels: _Optional[_Iterable[_Union[ValueLabel, _Mapping]]] = ..., sensitive: _Optional[bool] = ...) -> None: ...

class ValueLabel(_message.Message):
    __slots__ = ("code", "label")
    CODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    code: str
    label: str
    def __init__(self, code: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class DatasetDescription(_message.Message):
    __slots__ = ("title", "abstract", "custodian", "contact", "keywords", "temporal_start", "temporal_end", "spatial_coverage", "access_rights", "custodian_id")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ABSTRACT_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_START_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_END_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_RIGHTS_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAN_ID_FIELD_NUMBER: _ClassVar[int]
    title: str
    abstract: str
    custodian: str
    contact: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    temporal_start: str
    temporal_end: str
    spatial_coverage: str
    access_rights: str
    custodian_id: str
    def __init__(self, title: _Optional[str] = ..., abstract: _Optional[str] = ..., custodian: _Optional[str] = ..., contact: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., temporal_start: _Optional[str] = ..., temporal_end: _Optional[str] = ..., spatial_coverage: _Optional[str] = ..., access_rights: _Optional[str] = ..., custodian_id: _Optional[str] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("name", "columns", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSpec]
    description: DatasetDescription
    def __init__(self, name: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[ColumnSpec, _Mapping]]] = ..., description: _Optional[_Union[DatasetDescription, _Mapping]] = ...) -> None: ...

class RuleCheck(_message.Message):
    __slots__ = ("rule", "passed", "detail", "setting")
    RULE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SETTING_FIELD_NUMBER: _ClassVar[int]
    rule: str
    passed: bool
    detail: str
    setting: str
    def __init__(self, rule: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ..., setting: _Optional[str] = ...) -> None: ...

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
