"""fedtre.v1.AdminService: people, API tokens, projects and the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2

from coordinator.admin import Admin
from coordinator.auth import Authenticator
from coordinator.domain.governance import ADMINS, PEOPLE, Project, ProjectChanges, Token, User
from coordinator.rpc.errors import rpc_method
from fedtre.audit import AuditEntry
from fedtre.errors import InvalidRequest
from fedtre.identity.peer import Identity
from fedtre.v1 import admin_pb2, admin_pb2_grpc

UPDATABLE = (
    "description",
    "nodes",
    "datasets",
    "analyses",
    "approval_expires_at",
    "approvals_required",
    "auto_approve",
    "starts_at",
)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin, auth: Authenticator | None = None) -> None:
        self._admin = admin
        self.auth = auth  # read by rpc_method

    @rpc_method(*PEOPLE)
    async def WhoAmI(
        self,
        request: admin_pb2.WhoAmIRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.WhoAmIResponse:
        who, projects = await asyncio.to_thread(self._admin.whoami, identity)
        return admin_pb2.WhoAmIResponse(name=who.name, role=who.role, projects=projects)

    # -- people ------------------------------------------------------------------------

    @rpc_method(*ADMINS)
    async def CreateUser(
        self,
        request: admin_pb2.CreateUserRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.CreateUserResponse:
        user = await asyncio.to_thread(
            self._admin.create_user, identity, request.name, request.role or "researcher"
        )
        return admin_pb2.CreateUserResponse(user=user_to_pb(user))

    @rpc_method(*ADMINS)
    async def ListUsers(
        self,
        request: admin_pb2.ListUsersRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.ListUsersResponse:
        users = await asyncio.to_thread(self._admin.users)
        return admin_pb2.ListUsersResponse(users=[user_to_pb(u) for u in users])

    @rpc_method(*ADMINS)
    async def SetUserDisabled(
        self,
        request: admin_pb2.SetUserDisabledRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.SetUserDisabledResponse:
        user = await asyncio.to_thread(
            self._admin.set_disabled, identity, request.name, request.disabled
        )
        return admin_pb2.SetUserDisabledResponse(user=user_to_pb(user))

    @rpc_method(*ADMINS)
    async def IssueToken(
        self,
        request: admin_pb2.IssueTokenRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.IssueTokenResponse:
        record, token = await asyncio.to_thread(
            self._admin.issue_token, identity, request.user, request.valid_days, request.description
        )
        return admin_pb2.IssueTokenResponse(info=token_to_pb(record), token=token)

    @rpc_method(*ADMINS)
    async def ListTokens(
        self,
        request: admin_pb2.ListTokensRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.ListTokensResponse:
        tokens = await asyncio.to_thread(self._admin.tokens, request.user or None)
        return admin_pb2.ListTokensResponse(tokens=[token_to_pb(t) for t in tokens])

    @rpc_method(*ADMINS)
    async def RevokeToken(
        self,
        request: admin_pb2.RevokeTokenRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.RevokeTokenResponse:
        record = await asyncio.to_thread(self._admin.revoke_token, identity, request.token_id)
        return admin_pb2.RevokeTokenResponse(info=token_to_pb(record))

    # -- projects ----------------------------------------------------------------------

    @rpc_method(*ADMINS)
    async def CreateProject(
        self,
        request: admin_pb2.CreateProjectRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.CreateProjectResponse:
        project = await asyncio.to_thread(
            self._admin.create_project, identity, project_from_pb(request.project)
        )
        return admin_pb2.CreateProjectResponse(project=project_to_pb(project))

    @rpc_method(*ADMINS)
    async def UpdateProject(
        self,
        request: admin_pb2.UpdateProjectRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.UpdateProjectResponse:
        paths = list(request.update_mask.paths)
        unknown = sorted(set(paths) - set(UPDATABLE))
        if unknown or not paths:
            raise InvalidRequest(
                f"update_mask must name some of {', '.join(UPDATABLE)}"
                + (f"; unknown: {unknown}" if unknown else "")
            )
        given = project_from_pb(request.project)
        if "approval_expires_at" in paths and given.approval_expires_at is None:
            raise InvalidRequest("approval_expires_at is in update_mask but has no value")
        if "starts_at" in paths and given.starts_at is None:
            raise InvalidRequest("starts_at is in update_mask but has no value")
        if "approvals_required" in paths and given.approvals_required < 1:
            raise InvalidRequest("approvals_required must be between 1 and 10")
        changes = ProjectChanges(
            description=given.description if "description" in paths else None,
            nodes=given.nodes if "nodes" in paths else None,
            datasets=given.datasets if "datasets" in paths else None,
            analyses=given.analyses if "analyses" in paths else None,
            approval_expires_at=given.approval_expires_at
            if "approval_expires_at" in paths
            else None,
            approvals_required=given.approvals_required if "approvals_required" in paths else None,
            auto_approve=given.auto_approve if "auto_approve" in paths else None,
            starts_at=given.starts_at if "starts_at" in paths else None,
        )
        project = await asyncio.to_thread(
            self._admin.update_project, identity, request.name, changes
        )
        return admin_pb2.UpdateProjectResponse(project=project_to_pb(project))

    @rpc_method(*ADMINS)
    async def AddProjectMember(
        self,
        request: admin_pb2.AddProjectMemberRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.AddProjectMemberResponse:
        project = await asyncio.to_thread(
            self._admin.add_member, identity, request.project, request.user
        )
        return admin_pb2.AddProjectMemberResponse(project=project_to_pb(project))

    @rpc_method(*ADMINS)
    async def RemoveProjectMember(
        self,
        request: admin_pb2.RemoveProjectMemberRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.RemoveProjectMemberResponse:
        project = await asyncio.to_thread(
            self._admin.remove_member, identity, request.project, request.user
        )
        return admin_pb2.RemoveProjectMemberResponse(project=project_to_pb(project))

    @rpc_method(*PEOPLE)
    async def GetProject(
        self,
        request: admin_pb2.GetProjectRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.GetProjectResponse:
        project = await asyncio.to_thread(self._admin.project, identity, request.name)
        return admin_pb2.GetProjectResponse(project=project_to_pb(project))

    @rpc_method(*PEOPLE)
    async def ListProjects(
        self,
        request: admin_pb2.ListProjectsRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.ListProjectsResponse:
        projects = await asyncio.to_thread(self._admin.projects, identity)
        return admin_pb2.ListProjectsResponse(projects=[project_to_pb(p) for p in projects])

    # -- audit -------------------------------------------------------------------------

    @rpc_method(*ADMINS)
    async def VerifyAudit(
        self,
        request: admin_pb2.VerifyAuditRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> admin_pb2.VerifyAuditResponse:
        checkpoint = (
            (request.checkpoint_size, request.checkpoint_head) if request.check_checkpoint else None
        )
        report = await asyncio.to_thread(self._admin.verify_audit, checkpoint)
        return admin_pb2.VerifyAuditResponse(
            ok=report.ok,
            entries=report.entries,
            broken_at=report.broken_at or 0,
            problem=report.problem,
            head_hash=report.head_hash,
        )

    @rpc_method(*ADMINS)
    async def ExportAudit(
        self,
        request: admin_pb2.ExportAuditRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> AsyncIterator[admin_pb2.AuditEntry]:
        if request.since < 0:
            raise InvalidRequest("since must be 0 or more")
        since = request.since
        while True:
            batch = await asyncio.to_thread(_batch, self._admin, since)
            for entry in batch:
                yield entry_to_pb(entry)
            if len(batch) < _BATCH:
                return
            since = batch[-1].seq


_BATCH = 500


def _batch(admin: Admin, since: int) -> list[AuditEntry]:
    entries = []
    for entry in admin.audit_entries(since):
        entries.append(entry)
        if len(entries) == _BATCH:
            break
    return entries


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def user_to_pb(user: User) -> admin_pb2.User:
    return admin_pb2.User(
        name=user.name,
        role=user.role,
        disabled=user.disabled,
        created_at=_ts(user.created_at),
        created_by=user.created_by,
    )


def token_to_pb(token: Token) -> admin_pb2.TokenInfo:
    return admin_pb2.TokenInfo(
        token_id=token.token_id,
        user=token.user,
        description=token.description,
        created_at=_ts(token.created_at),
        expires_at=_ts(token.expires_at),
        revoked=token.revoked,
        last_used_at=_ts(token.last_used_at),
        created_by=token.created_by,
    )


def project_to_pb(project: Project) -> admin_pb2.Project:
    return admin_pb2.Project(
        name=project.name,
        description=project.description,
        members=list(project.members),
        nodes=list(project.nodes),
        datasets=list(project.datasets),
        analyses=list(project.analyses),
        approval_expires_at=_ts(project.approval_expires_at),
        approvals_required=project.approvals_required,
        auto_approve=list(project.auto_approve),
        created_at=_ts(project.created_at),
        created_by=project.created_by,
        starts_at=_ts(project.starts_at),
    )


def project_from_pb(message: admin_pb2.Project) -> Project:
    expires = (
        message.approval_expires_at.ToDatetime(tzinfo=UTC)
        if message.HasField("approval_expires_at")
        else None
    )
    return Project(
        name=message.name,
        description=message.description,
        members=tuple(message.members),
        nodes=tuple(message.nodes),
        datasets=tuple(message.datasets),
        analyses=tuple(message.analyses),
        approval_expires_at=expires,
        approvals_required=message.approvals_required,
        auto_approve=tuple(message.auto_approve),
        created_at=datetime.now(UTC),
        created_by="",
        starts_at=(
            message.starts_at.ToDatetime(tzinfo=UTC) if message.HasField("starts_at") else None
        ),
    )


def entry_to_pb(entry: AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(
        seq=entry.seq,
        at=entry.at,
        actor=entry.actor,
        event=entry.event,
        subject=entry.subject,
        details_json=json.dumps(entry.details, sort_keys=True),
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )
