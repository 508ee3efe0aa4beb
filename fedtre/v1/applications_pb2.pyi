import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplicationForm(_message.Message):
    __slots__ = ("applicants", "organisation", "project_name", "title", "lay_summary", "public_benefit", "technical_summary", "funders", "start_date", "end_date", "article6", "article9", "duty_of_confidentiality", "national_data_opt_out", "nodes", "datasets", "analyses", "linkage", "expected_outputs")
    APPLICANTS_FIELD_NUMBER: _ClassVar[int]
    ORGANISATION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LAY_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_BENEFIT_FIELD_NUMBER: _ClassVar[int]
    TECHNICAL_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FUNDERS_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    ARTICLE6_FIELD_NUMBER: _ClassVar[int]
    ARTICLE9_FIELD_NUMBER: _ClassVar[int]
    DUTY_OF_CONFIDENTIALITY_FIELD_NUMBER: _ClassVar[int]
    NATIONAL_DATA_OPT_OUT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ANALYSES_FIELD_NUMBER: _ClassVar[int]
    LINKAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    applicants: _containers.RepeatedScalarFieldContainer[str]
    organisation: str
    project_name: str
    title: str
    lay_summary: str
    public_benefit: str
    technical_summary: str
    funders: _containers.RepeatedScalarFieldContainer[str]
    start_date: str
    end_date: str
    article6: str
    article9: str
    duty_of_confidentiality: str
    national_data_opt_out: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    datasets: _containers.RepeatedScalarFieldContainer[str]
    analyses: _containers.RepeatedScalarFieldContainer[str]
    linkage: str
    expected_outputs: str
    def __init__(self, applicants: _Optional[_Iterable[str]] = ..., organisation: _Optional[str] = ..., project_name: _Optional[str] = ..., title: _Optional[str] = ..., lay_summary: _Optional[str] = ..., public_benefit: _Optional[str] = ..., technical_summary: _Optional[str] = ..., funders: _Optional[_Iterable[str]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., article6: _Optional[str] = ..., article9: _Optional[str] = ..., duty_of_confidentiality: _Optional[str] = ..., national_data_opt_out: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., datasets: _Optional[_Iterable[str]] = ..., analyses: _Optional[_Iterable[str]] = ..., linkage: _Optional[str] = ..., expected_outputs: _Optional[str] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("nodes", "datasets", "analyses", "end_date")
    NODES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ANALYSES_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    datasets: _containers.RepeatedScalarFieldContainer[str]
    analyses: _containers.RepeatedScalarFieldContainer[str]
    end_date: str
    def __init__(self, nodes: _Optional[_Iterable[str]] = ..., datasets: _Optional[_Iterable[str]] = ..., analyses: _Optional[_Iterable[str]] = ..., end_date: _Optional[str] = ...) -> None: ...

class Applicant(_message.Message):
    __slots__ = ("name", "accredited")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACCREDITED_FIELD_NUMBER: _ClassVar[int]
    name: str
    accredited: bool
    def __init__(self, name: _Optional[str] = ..., accredited: _Optional[bool] = ...) -> None: ...

class ApplicationDecision(_message.Message):
    __slots__ = ("approver", "decision", "comment", "at", "version", "scope")
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    approver: str
    decision: str
    comment: str
    at: _timestamp_pb2.Timestamp
    version: int
    scope: Scope
    def __init__(self, approver: _Optional[str] = ..., decision: _Optional[str] = ..., comment: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ...) -> None: ...

class Application(_message.Message):
    __slots__ = ("id", "state", "form", "submitted_by", "applicants", "sector", "version", "submitted_at", "updated_at", "decisions", "approvals_required", "approved_scope", "approved_at", "publications")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    APPLICANTS_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVED_SCOPE_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLICATIONS_FIELD_NUMBER: _ClassVar[int]
    id: int
    state: str
    form: ApplicationForm
    submitted_by: str
    applicants: _containers.RepeatedCompositeFieldContainer[Applicant]
    sector: str
    version: int
    submitted_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    decisions: _containers.RepeatedCompositeFieldContainer[ApplicationDecision]
    approvals_required: int
    approved_scope: Scope
    approved_at: _timestamp_pb2.Timestamp
    publications: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., state: _Optional[str] = ..., form: _Optional[_Union[ApplicationForm, _Mapping]] = ..., submitted_by: _Optional[str] = ..., applicants: _Optional[_Iterable[_Union[Applicant, _Mapping]]] = ..., sector: _Optional[str] = ..., version: _Optional[int] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[ApplicationDecision, _Mapping]]] = ..., approvals_required: _Optional[int] = ..., approved_scope: _Optional[_Union[Scope, _Mapping]] = ..., approved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publications: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitApplicationRequest(_message.Message):
    __slots__ = ("form",)
    FORM_FIELD_NUMBER: _ClassVar[int]
    form: ApplicationForm
    def __init__(self, form: _Optional[_Union[ApplicationForm, _Mapping]] = ...) -> None: ...

class SubmitApplicationResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...

class ResubmitApplicationRequest(_message.Message):
    __slots__ = ("id", "form")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    id: int
    form: ApplicationForm
    def __init__(self, id: _Optional[int] = ..., form: _Optional[_Union[ApplicationForm, _Mapping]] = ...) -> None: ...

class ResubmitApplicationResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...

class GetApplicationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetApplicationResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...

class ListApplicationsRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class ListApplicationsResponse(_message.Message):
    __slots__ = ("applications",)
    APPLICATIONS_FIELD_NUMBER: _ClassVar[int]
    applications: _containers.RepeatedCompositeFieldContainer[Application]
    def __init__(self, applications: _Optional[_Iterable[_Union[Application, _Mapping]]] = ...) -> None: ...

class DecideApplicationRequest(_message.Message):
    __slots__ = ("id", "decision", "comment", "scope")
    ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    id: int
    decision: str
    comment: str
    scope: Scope
    def __init__(self, id: _Optional[int] = ..., decision: _Optional[str] = ..., comment: _Optional[str] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ...) -> None: ...

class DecideApplicationResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...

class AddPublicationRequest(_message.Message):
    __slots__ = ("id", "publication")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    id: int
    publication: str
    def __init__(self, id: _Optional[int] = ..., publication: _Optional[str] = ...) -> None: ...

class AddPublicationResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...

class Affiliation(_message.Message):
    __slots__ = ("user", "organisation", "sector", "accredited", "recorded_at", "recorded_by")
    USER_FIELD_NUMBER: _ClassVar[int]
    ORGANISATION_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    ACCREDITED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_BY_FIELD_NUMBER: _ClassVar[int]
    user: str
    organisation: str
    sector: str
    accredited: bool
    recorded_at: _timestamp_pb2.Timestamp
    recorded_by: str
    def __init__(self, user: _Optional[str] = ..., organisation: _Optional[str] = ..., sector: _Optional[str] = ..., accredited: _Optional[bool] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_by: _Optional[str] = ...) -> None: ...

class SetAffiliationRequest(_message.Message):
    __slots__ = ("affiliation",)
    AFFILIATION_FIELD_NUMBER: _ClassVar[int]
    affiliation: Affiliation
    def __init__(self, affiliation: _Optional[_Union[Affiliation, _Mapping]] = ...) -> None: ...

class SetAffiliationResponse(_message.Message):
    __slots__ = ("affiliation",)
    AFFILIATION_FIELD_NUMBER: _ClassVar[int]
    affiliation: Affiliation
    def __init__(self, affiliation: _Optional[_Union[Affiliation, _Mapping]] = ...) -> None: ...

class ListAffiliationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAffiliationsResponse(_message.Message):
    __slots__ = ("affiliations",)
    AFFILIATIONS_FIELD_NUMBER: _ClassVar[int]
    affiliations: _containers.RepeatedCompositeFieldContainer[Affiliation]
    def __init__(self, affiliations: _Optional[_Iterable[_Union[Affiliation, _Mapping]]] = ...) -> None: ...

class GetProjectApplicationRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class GetProjectApplicationResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...
