"""The client side of fedtre.v1.AdminService: people, tokens, projects, the audit log.

Reached as `fedtre.Client(...).admin`; every call needs the caller's role (most: admin).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from fedtre.errors import FedtreError, InvalidRequest
from fedtre.status import error_from_rpc
from fedtre.v1 import admin_pb2, admin_pb2_grpc


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    disabled: bool
    created_at: datetime | None
    created_by: str


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    user: str
    description: str
    created_at: datetime | None
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None
    created_by: str


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    description: str
    members: tuple[str, ...]
    nodes: tuple[str, ...]
    datasets: tuple[str, ...]
    analyses: tuple[str, ...]
    approval_expires_at: datetime | None
    approvals_required: int
    auto_approve: tuple[str, ...]
    created_at: datetime | None
    created_by: str
    starts_at: datetime | None = None


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    entries: int
    broken_at: int | None
    problem: str
    head_hash: str


class AdminClient:
    """AdminService calls over an open channel (the Client's)."""

    def __init__(
        self,
        channel: grpc.Channel,
        timeout: float = 30.0,
        errors: Callable[[grpc.RpcError], FedtreError] = error_from_rpc,
    ) -> None:
        """errors turns a failed call into the error to raise (the Client's, which also
        says why the coordinator cannot be reached)."""
        self._stub = admin_pb2_grpc.AdminServiceStub(channel)
        self._timeout = timeout
        self._errors = errors

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._errors(exc) from None

    def whoami(self) -> tuple[str, str, tuple[str, ...]]:
        """Return (name, role, projects) of the token's owner."""
        r = self._call("WhoAmI", admin_pb2.WhoAmIRequest())
        return r.name, r.role, tuple(r.projects)

    # -- people ------------------------------------------------------------------------

    def create_user(self, name: str, role: str = "researcher") -> UserInfo:
        r = self._call("CreateUser", admin_pb2.CreateUserRequest(name=name, role=role))
        return _user(r.user)

    def users(self) -> list[UserInfo]:
        return [_user(u) for u in self._call("ListUsers", admin_pb2.ListUsersRequest()).users]

    def set_disabled(self, name: str, disabled: bool = True) -> UserInfo:
        request = admin_pb2.SetUserDisabledRequest(name=name, disabled=disabled)
        return _user(self._call("SetUserDisabled", request).user)

    def issue_token(
        self, user: str, *, valid_days: int = 0, description: str = ""
    ) -> tuple[TokenInfo, str]:
        """Return (token record, the token): the token is shown this once; keep it secret."""
        request = admin_pb2.IssueTokenRequest(
            user=user, valid_days=valid_days, description=description
        )
        r = self._call("IssueToken", request)
        return _token(r.info), r.token

    def tokens(self, user: str | None = None) -> list[TokenInfo]:
        request = admin_pb2.ListTokensRequest(user=user or "")
        return [_token(t) for t in self._call("ListTokens", request).tokens]

    def revoke_token(self, token_id: str) -> TokenInfo:
        request = admin_pb2.RevokeTokenRequest(token_id=token_id)
        return _token(self._call("RevokeToken", request).info)

    # -- projects ----------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        *,
        expires: date | datetime,
        nodes: Sequence[str],
        datasets: Sequence[str],
        analyses: Sequence[str],
        members: Sequence[str] = (),
        approvals_required: int = 1,
        auto_approve: Sequence[str] = (),
        description: str = "",
        starts: date | datetime | None = None,
    ) -> ProjectInfo:
        """Create a project; its data-access approval runs from starts (None: now; a date
        means the start of that day, UTC) until expires (a date: the end of that day)."""
        project = admin_pb2.Project(
            name=name,
            description=description,
            members=list(members),
            nodes=list(nodes),
            datasets=list(datasets),
            analyses=list(analyses),
            approval_expires_at=_timestamp(expires),
            approvals_required=approvals_required,
            auto_approve=list(auto_approve),
            starts_at=None if starts is None else _start_timestamp(starts),
        )
        r = self._call("CreateProject", admin_pb2.CreateProjectRequest(project=project))
        return _project(r.project)

    def update_project(self, name: str, **changes: Any) -> ProjectInfo:
        """Change some of: description, nodes, datasets, analyses, expires, starts,
        approvals_required, auto_approve."""
        project = admin_pb2.Project(name=name)
        paths = []
        for key, value in changes.items():
            if key == "expires":
                project.approval_expires_at.CopyFrom(_timestamp(value))
                paths.append("approval_expires_at")
            elif key == "starts":
                project.starts_at.CopyFrom(_start_timestamp(value))
                paths.append("starts_at")
            elif key in ("nodes", "datasets", "analyses", "auto_approve"):
                getattr(project, key).extend(list(value))
                paths.append(key)
            elif key in ("description", "approvals_required"):
                setattr(project, key, value)
                paths.append(key)
            else:
                raise InvalidRequest(f"a project has no changeable field {key!r}")
        request = admin_pb2.UpdateProjectRequest(
            name=name, project=project, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return _project(self._call("UpdateProject", request).project)

    def add_member(self, project: str, user: str) -> ProjectInfo:
        request = admin_pb2.AddProjectMemberRequest(project=project, user=user)
        return _project(self._call("AddProjectMember", request).project)

    def remove_member(self, project: str, user: str) -> ProjectInfo:
        request = admin_pb2.RemoveProjectMemberRequest(project=project, user=user)
        return _project(self._call("RemoveProjectMember", request).project)

    def project(self, name: str) -> ProjectInfo:
        return _project(self._call("GetProject", admin_pb2.GetProjectRequest(name=name)).project)

    def projects(self) -> list[ProjectInfo]:
        response = self._call("ListProjects", admin_pb2.ListProjectsRequest())
        return [_project(p) for p in response.projects]

    # -- audit -------------------------------------------------------------------------

    def verify_audit(self, checkpoint: tuple[int, str] | None = None) -> AuditReport:
        """Walk the coordinator's audit chain; with checkpoint (size, head hash), also
        check that the log still holds that prefix."""
        request = admin_pb2.VerifyAuditRequest()
        if checkpoint is not None:
            request.check_checkpoint = True
            request.checkpoint_size, request.checkpoint_head = checkpoint
        r = self._call("VerifyAudit", request)
        return AuditReport(r.ok, r.entries, r.broken_at or None, r.problem, r.head_hash)

    def export_audit(self, since: int = 0) -> Iterator[dict[str, Any]]:
        """Yield the coordinator's audit entries after `since`, in order, as dicts."""
        try:
            for e in self._stub.ExportAudit(admin_pb2.ExportAuditRequest(since=since)):
                yield {
                    "seq": e.seq,
                    "at": e.at,
                    "actor": e.actor,
                    "event": e.event,
                    "subject": e.subject,
                    "details": json.loads(e.details_json or "{}"),
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
        except grpc.RpcError as exc:
            raise self._errors(exc) from None


def _timestamp(value: date | datetime) -> timestamp_pb2.Timestamp:
    if not isinstance(value, datetime):
        # A date means the end of that day, UTC: approval runs through it.
        value = datetime.combine(value, time(23, 59, 59), tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _start_timestamp(value: date | datetime) -> timestamp_pb2.Timestamp:
    # A date means the start of that day, UTC: approval runs from it.
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0), tzinfo=UTC)
    return _timestamp(value)


def _dt(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def _user(u: admin_pb2.User) -> UserInfo:
    return UserInfo(u.name, u.role, u.disabled, _dt(u, "created_at"), u.created_by)


def _token(t: admin_pb2.TokenInfo) -> TokenInfo:
    return TokenInfo(
        t.token_id,
        t.user,
        t.description,
        _dt(t, "created_at"),
        _dt(t, "expires_at"),
        t.revoked,
        _dt(t, "last_used_at"),
        t.created_by,
    )


def _project(p: admin_pb2.Project) -> ProjectInfo:
    return ProjectInfo(
        name=p.name,
        description=p.description,
        members=tuple(p.members),
        nodes=tuple(p.nodes),
        datasets=tuple(p.datasets),
        analyses=tuple(p.analyses),
        approval_expires_at=_dt(p, "approval_expires_at"),
        approvals_required=p.approvals_required,
        auto_approve=tuple(p.auto_approve),
        created_at=_dt(p, "created_at"),
        created_by=p.created_by,
        starts_at=_dt(p, "starts_at"),
    )
