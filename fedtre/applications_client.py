"""The client side of fedtre.v1.ApplicationService, and a reader of the public register.

Reached as `fedtre.Client(...).applications`: apply for a project with the Five Safes
fields, follow the application, and (approvers) decide on it. `read_register` reads the
coordinator's public Data Use Register over plain HTTP, without a token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

import grpc

from fedtre.errors import InvalidRequest
from fedtre.ops_http import read_page
from fedtre.status import error_from_rpc
from fedtre.v1 import applications_pb2 as pb
from fedtre.v1 import applications_pb2_grpc

# The form's fields, by Five Safe; those in LIST_FIELDS take several values.
FORM_FIELDS = tuple(pb.ApplicationForm.DESCRIPTOR.fields_by_name)
LIST_FIELDS = ("applicants", "funders", "nodes", "datasets", "analyses")


@dataclass(frozen=True)
class DecisionInfo:
    approver: str
    decision: str
    comment: str
    at: datetime | None
    version: int
    scope: dict[str, Any] | None


@dataclass(frozen=True)
class ApplicationInfo:
    id: int
    state: str
    form: dict[str, Any]
    submitted_by: str
    # Each applicant's name and whether an admin recorded them as accredited.
    applicants: tuple[tuple[str, bool], ...]
    sector: str
    version: int
    submitted_at: datetime | None
    updated_at: datetime | None
    decisions: tuple[DecisionInfo, ...]
    approvals_required: int
    approved_scope: dict[str, Any] | None
    approved_at: datetime | None
    publications: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AffiliationInfo:
    user: str
    organisation: str
    sector: str
    accredited: bool
    recorded_at: datetime | None
    recorded_by: str


def form_message(form: Mapping[str, Any]) -> pb.ApplicationForm:
    """The form's protobuf message from a mapping of FORM_FIELDS (dates: date or YYYY-MM-DD).

    Raises InvalidRequest naming an unknown field, or a list given where text belongs.
    """
    unknown = sorted(set(form) - set(FORM_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"an application has no field {unknown}; its fields are {', '.join(FORM_FIELDS)}"
        )
    message = pb.ApplicationForm()
    for key, value in form.items():
        if value is None:
            continue
        if key in LIST_FIELDS:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
                raise InvalidRequest(f'{key} is a list of names, e.g. {key} = ["a", "b"]')
            getattr(message, key).extend(values)
        elif isinstance(value, date):
            setattr(message, key, value.isoformat())
        elif isinstance(value, str):
            setattr(message, key, value)
        else:
            raise InvalidRequest(f"{key} is text, not {type(value).__name__}")
    return message


class ApplicationsClient:
    """ApplicationService calls over an open channel (the Client's)."""

    def __init__(self, channel: grpc.Channel, timeout: float = 30.0) -> None:
        self._stub = applications_pb2_grpc.ApplicationServiceStub(channel)
        self._timeout = timeout

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    # -- applicants --------------------------------------------------------------------

    def apply(self, form: Mapping[str, Any]) -> ApplicationInfo:
        """Submit an application; form maps FORM_FIELDS to values. You are an applicant."""
        request = pb.SubmitApplicationRequest(form=form_message(form))
        return _application(self._call("SubmitApplication", request).application)

    def resubmit(self, application_id: int, form: Mapping[str, Any]) -> ApplicationInfo:
        """Submit a returned application again with form (the whole form, changed)."""
        request = pb.ResubmitApplicationRequest(id=application_id, form=form_message(form))
        return _application(self._call("ResubmitApplication", request).application)

    def add_publication(self, application_id: int, publication: str) -> ApplicationInfo:
        request = pb.AddPublicationRequest(id=application_id, publication=publication)
        return _application(self._call("AddPublication", request).application)

    def application(self, application_id: int) -> ApplicationInfo:
        request = pb.GetApplicationRequest(id=application_id)
        return _application(self._call("GetApplication", request).application)

    def applications(self, state: str = "") -> list[ApplicationInfo]:
        response = self._call("ListApplications", pb.ListApplicationsRequest(state=state))
        return [_application(a) for a in response.applications]

    # -- the committee -----------------------------------------------------------------

    def approve(
        self,
        application_id: int,
        comment: str = "",
        *,
        nodes: Sequence[str] = (),
        datasets: Sequence[str] = (),
        analyses: Sequence[str] = (),
        end_date: date | str | None = None,
    ) -> ApplicationInfo:
        """Approve, narrowing the request to the given nodes, datasets, analyses and end
        date (each left out keeps the request's)."""
        scope = pb.Scope(
            nodes=list(nodes),
            datasets=list(datasets),
            analyses=list(analyses),
            end_date=end_date.isoformat() if isinstance(end_date, date) else end_date or "",
        )
        return self._decide(application_id, "approve", comment, scope)

    def reject(self, application_id: int, comment: str) -> ApplicationInfo:
        return self._decide(application_id, "reject", comment)

    def return_for_changes(self, application_id: int, comment: str) -> ApplicationInfo:
        """Send the application back to its applicants, saying what to change."""
        return self._decide(application_id, "return", comment)

    def withdraw(self, application_id: int, comment: str) -> ApplicationInfo:
        """Withdraw an approved application: its project lapses at once."""
        return self._decide(application_id, "withdraw", comment)

    def _decide(
        self, application_id: int, decision: str, comment: str, scope: pb.Scope | None = None
    ) -> ApplicationInfo:
        request = pb.DecideApplicationRequest(
            id=application_id, decision=decision, comment=comment, scope=scope
        )
        return _application(self._call("DecideApplication", request).application)

    # -- affiliations (admins) ---------------------------------------------------------

    def set_affiliation(
        self, user: str, organisation: str, *, sector: str = "", accredited: bool = False
    ) -> AffiliationInfo:
        affiliation = pb.Affiliation(
            user=user, organisation=organisation, sector=sector, accredited=accredited
        )
        response = self._call("SetAffiliation", pb.SetAffiliationRequest(affiliation=affiliation))
        return _affiliation(response.affiliation)

    def affiliations(self) -> list[AffiliationInfo]:
        response = self._call("ListAffiliations", pb.ListAffiliationsRequest())
        return [_affiliation(a) for a in response.affiliations]


def read_register(url: str, fmt: str = "json", timeout: float = 30.0) -> bytes:
    """The public Data Use Register from the coordinator's ops HTTP address, as served.

    url is http://HOST:PORT (the coordinator's --metrics-listen); fmt "json" or "csv".
    Raises InvalidRequest for a bad format or URL, Unavailable when it cannot be read.
    """
    if fmt not in ("json", "csv"):
        raise InvalidRequest(f"the register is served as json or csv, not {fmt!r}")
    return read_page(url, f"/register.{fmt}", timeout)


def register_entries(body: bytes) -> list[dict[str, Any]]:
    """The entries of a register read as JSON."""
    return list(json.loads(body)["entries"])


def _dt(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def _scope(message: Any, field: str) -> dict[str, Any] | None:
    if not message.HasField(field):
        return None
    s = getattr(message, field)
    return {
        "nodes": list(s.nodes),
        "datasets": list(s.datasets),
        "analyses": list(s.analyses),
        "end_date": s.end_date,
    }


def _form(m: pb.ApplicationForm) -> dict[str, Any]:
    return {
        key: list(getattr(m, key)) if key in LIST_FIELDS else getattr(m, key) for key in FORM_FIELDS
    }


def _application(a: pb.Application) -> ApplicationInfo:
    return ApplicationInfo(
        id=a.id,
        state=a.state,
        form=_form(a.form),
        submitted_by=a.submitted_by,
        applicants=tuple((p.name, p.accredited) for p in a.applicants),
        sector=a.sector,
        version=a.version,
        submitted_at=_dt(a, "submitted_at"),
        updated_at=_dt(a, "updated_at"),
        decisions=tuple(
            DecisionInfo(
                d.approver, d.decision, d.comment, _dt(d, "at"), d.version, _scope(d, "scope")
            )  # fmt: skip
            for d in a.decisions
        ),
        approvals_required=a.approvals_required,
        approved_scope=_scope(a, "approved_scope"),
        approved_at=_dt(a, "approved_at"),
        publications=tuple(a.publications),
    )


def _affiliation(a: pb.Affiliation) -> AffiliationInfo:
    return AffiliationInfo(
        a.user, a.organisation, a.sector, a.accredited, _dt(a, "recorded_at"), a.recorded_by
    )
