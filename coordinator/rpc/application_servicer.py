"""fedtre.v1.ApplicationService: Data Access Requests, the committee's decisions, affiliations."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date, datetime

import grpc
from google.protobuf import timestamp_pb2

from coordinator.applications import Applications
from coordinator.auth import Authenticator
from coordinator.domain.applications import (
    Affiliation,
    Application,
    ApplicationForm,
    Narrowing,
    Scope,
)
from coordinator.domain.governance import ADMINS, PEOPLE
from coordinator.rpc.errors import rpc_method
from fedtre.errors import InvalidRequest
from fedtre.identity.peer import Identity
from fedtre.v1 import applications_pb2 as pb
from fedtre.v1 import applications_pb2_grpc


class ApplicationServicer(applications_pb2_grpc.ApplicationServiceServicer):
    def __init__(self, applications: Applications, auth: Authenticator | None = None) -> None:
        self._applications = applications
        self.auth = auth  # read by rpc_method

    @rpc_method(*PEOPLE)
    async def SubmitApplication(
        self, request: pb.SubmitApplicationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.SubmitApplicationResponse:  # fmt: skip
        form = form_from_pb(request.form)
        found = await asyncio.to_thread(self._applications.submit, identity, form)
        return pb.SubmitApplicationResponse(application=application_to_pb(found))

    @rpc_method(*PEOPLE)
    async def ResubmitApplication(
        self, request: pb.ResubmitApplicationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.ResubmitApplicationResponse:  # fmt: skip
        form = form_from_pb(request.form)
        found = await asyncio.to_thread(self._applications.resubmit, identity, request.id, form)
        return pb.ResubmitApplicationResponse(application=application_to_pb(found))

    @rpc_method(*PEOPLE)
    async def GetApplication(
        self, request: pb.GetApplicationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.GetApplicationResponse:  # fmt: skip
        found = await asyncio.to_thread(self._applications.application, identity, request.id)
        return pb.GetApplicationResponse(application=application_to_pb(found))

    @rpc_method(*PEOPLE)
    async def ListApplications(
        self, request: pb.ListApplicationsRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.ListApplicationsResponse:  # fmt: skip
        found = await asyncio.to_thread(self._applications.applications, identity, request.state)
        return pb.ListApplicationsResponse(applications=[application_to_pb(a) for a in found])

    @rpc_method(*PEOPLE)
    async def DecideApplication(
        self, request: pb.DecideApplicationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.DecideApplicationResponse:  # fmt: skip
        scope = narrowing_from_pb(request.scope) if request.HasField("scope") else None
        found = await asyncio.to_thread(
            self._applications.decide,
            identity,
            request.id,
            request.decision,
            request.comment,
            scope,
        )
        return pb.DecideApplicationResponse(application=application_to_pb(found))

    @rpc_method(*PEOPLE)
    async def AddPublication(
        self, request: pb.AddPublicationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.AddPublicationResponse:  # fmt: skip
        found = await asyncio.to_thread(
            self._applications.add_publication, identity, request.id, request.publication
        )
        return pb.AddPublicationResponse(application=application_to_pb(found))

    @rpc_method(*ADMINS)
    async def SetAffiliation(
        self, request: pb.SetAffiliationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.SetAffiliationResponse:  # fmt: skip
        a = request.affiliation
        found = await asyncio.to_thread(
            self._applications.set_affiliation, identity, a.user, a.organisation, a.sector,
            a.accredited,
        )  # fmt: skip
        return pb.SetAffiliationResponse(affiliation=affiliation_to_pb(found))

    @rpc_method(*ADMINS)
    async def ListAffiliations(
        self, request: pb.ListAffiliationsRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.ListAffiliationsResponse:  # fmt: skip
        found = await asyncio.to_thread(self._applications.affiliations)
        return pb.ListAffiliationsResponse(affiliations=[affiliation_to_pb(a) for a in found])

    @rpc_method("node")
    async def GetProjectApplication(
        self, request: pb.GetProjectApplicationRequest, context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> pb.GetProjectApplicationResponse:  # fmt: skip
        found = await asyncio.to_thread(self._applications.for_project, identity, request.project)
        # The TRE's operator reads what was approved and by whom applied (safe people),
        # not the committee's deliberation.
        public = replace(found, decisions=())
        return pb.GetProjectApplicationResponse(application=application_to_pb(public))


def _date(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(f"{what} {value!r} is not a date; write it as YYYY-MM-DD") from None


def form_from_pb(m: pb.ApplicationForm) -> ApplicationForm:
    return ApplicationForm(
        applicants=tuple(m.applicants),
        organisation=m.organisation,
        project_name=m.project_name,
        title=m.title,
        lay_summary=m.lay_summary,
        public_benefit=m.public_benefit,
        technical_summary=m.technical_summary,
        funders=tuple(m.funders),
        start_date=_date(m.start_date, "start_date"),
        end_date=_date(m.end_date, "end_date"),
        article6=m.article6.strip(),
        article9=m.article9.strip(),
        duty_of_confidentiality=m.duty_of_confidentiality,
        national_data_opt_out=m.national_data_opt_out,
        nodes=tuple(m.nodes),
        datasets=tuple(m.datasets),
        analyses=tuple(m.analyses),
        linkage=m.linkage,
        expected_outputs=m.expected_outputs,
    )


def form_to_pb(f: ApplicationForm) -> pb.ApplicationForm:
    return pb.ApplicationForm(
        applicants=list(f.applicants),
        organisation=f.organisation,
        project_name=f.project_name,
        title=f.title,
        lay_summary=f.lay_summary,
        public_benefit=f.public_benefit,
        technical_summary=f.technical_summary,
        funders=list(f.funders),
        start_date=f.start_date.isoformat(),
        end_date=f.end_date.isoformat(),
        article6=f.article6,
        article9=f.article9,
        duty_of_confidentiality=f.duty_of_confidentiality,
        national_data_opt_out=f.national_data_opt_out,
        nodes=list(f.nodes),
        datasets=list(f.datasets),
        analyses=list(f.analyses),
        linkage=f.linkage,
        expected_outputs=f.expected_outputs,
    )


def narrowing_from_pb(m: pb.Scope) -> Narrowing:
    """How an approver narrows the request: empty parts keep the request's."""
    return Narrowing(
        tuple(v.strip() for v in m.nodes if v.strip()),
        tuple(v.strip() for v in m.datasets if v.strip()),
        tuple(v.strip() for v in m.analyses if v.strip()),
        _date(m.end_date, "end_date") if m.end_date.strip() else None,
    )


def scope_to_pb(scope: Scope | None) -> pb.Scope | None:
    if scope is None:
        return None
    return pb.Scope(
        nodes=list(scope.nodes),
        datasets=list(scope.datasets),
        analyses=list(scope.analyses),
        end_date=scope.end_date.isoformat(),
    )


def application_to_pb(a: Application) -> pb.Application:
    return pb.Application(
        id=a.id,
        state=a.state.value,
        form=form_to_pb(a.form),
        submitted_by=a.submitted_by,
        applicants=[
            pb.Applicant(name=name, accredited=name in a.accredited) for name in a.form.applicants
        ],
        sector=a.sector,
        version=a.version,
        submitted_at=_ts(a.submitted_at),
        updated_at=_ts(a.updated_at),
        decisions=[
            pb.ApplicationDecision(
                approver=d.approver,
                decision=d.verdict.value,
                comment=d.comment,
                at=_ts(d.at),
                version=d.version,
                scope=scope_to_pb(d.scope),
            )
            for d in a.decisions
        ],
        approvals_required=a.approvals_required,
        approved_scope=scope_to_pb(a.approved_scope),
        approved_at=_ts(a.approved_at),
        publications=list(a.publications),
    )


def affiliation_to_pb(a: Affiliation) -> pb.Affiliation:
    return pb.Affiliation(
        user=a.user,
        organisation=a.organisation,
        sector=a.sector,
        accredited=a.accredited,
        recorded_at=_ts(a.recorded_at),
        recorded_by=a.recorded_by,
    )


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
