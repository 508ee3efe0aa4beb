"""People, API tokens, project membership, approvals and signed job grants, in SQL.

Every change writes its audit entry in the same transaction (coordinator.store.audit_log).
Tokens are stored as SHA-256 hashes only: a token is 32 random bytes, so a hash is as
strong as a slow KDF would be and can be checked on every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import DateTime, ForeignKey, LargeBinary, String, Text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from coordinator.domain.governance import PEOPLE, Project, ProjectChanges, Token, User
from coordinator.store import audit_log
from coordinator.store.schema import Base, JobRow, ProjectRow
from fedtre.audit import AuditEntry, VerifyReport
from fedtre.errors import Conflict, InvalidRequest, NotFound
from fedtre.identity.provenance import Provenance

if TYPE_CHECKING:
    from coordinator.store.store import Store


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(64), default="")


class TokenRow(Base):
    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    # SHA-256 of the whole token, hex; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProjectMemberRow(Base):
    __tablename__ = "project_members"

    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    added_by: Mapped[str] = mapped_column(String(64), default="")


class JobApprovalRow(Base):
    __tablename__ = "job_approvals"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    approver: Mapped[str] = mapped_column(String(64), primary_key=True)
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobGrantRow(Base):
    """The signed record of what was approved; tasks are dispatched from it, not the job row."""

    __tablename__ = "job_grants"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    grant: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ResultProvenanceRow(Base):
    """A released output's signed provenance, as its agent sent it (fedtre.identity.provenance)."""

    __tablename__ = "result_provenance"

    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.task_id"), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    dataset_version: Mapped[str] = mapped_column(String(200), default="")
    statement: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GovernanceStore:
    """Governance state, in the Store's database and transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store
        try:
            with self._tx() as s:
                audit_log.ensure_head(s)
        except IntegrityError:
            pass  # another replica created it first

    def _tx(self) -> Any:
        return self._store._tx()

    def _read(self) -> Any:
        return self._store._read()

    # -- audit -------------------------------------------------------------------------

    def audit(
        self,
        *,
        actor: str,
        event: str,
        subject: str = "",
        details: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> int:
        """Record an event that changes nothing else (a refusal, a read of results)."""
        with self._tx() as s:
            return audit_log.record(
                s, actor=actor, event=event, subject=subject, details=details, now=now
            )

    def audit_size(self) -> int:
        """How many entries the coordinator's audit log holds."""
        with self._read() as s:
            return audit_log.size(s)

    def verify_audit(self) -> VerifyReport:
        with self._read() as s:
            return audit_log.verify(s)

    def audit_entries(self, since: int = 0, batch: int = 500) -> Iterator[AuditEntry]:
        """Yield the audit log in order, reading it in batches."""
        while True:
            with self._read() as s:
                chunk = list(audit_log.entries(s, since=since, limit=batch))
            yield from chunk
            if len(chunk) < batch:
                return
            since = chunk[-1].seq

    # -- people ------------------------------------------------------------------------

    def create_user(self, name: str, role: str, by: str, now: datetime) -> User:
        if role not in PEOPLE:
            raise InvalidRequest(f"role must be one of {', '.join(PEOPLE)}, not {role!r}")
        try:
            with self._tx() as s:
                if s.get(UserRow, name) is not None:
                    raise Conflict(f"user {name!r} already exists; `fedtre users list` shows them")
                row = UserRow(name=name, role=role, disabled=False, created_at=now, created_by=by)
                s.add(row)
                s.flush()
                audit_log.record(
                    s, actor=by, event="user.created", subject=f"user:{name}",
                    details={"role": role}, now=now,
                )  # fmt: skip
                return _user(row)
        except IntegrityError as exc:
            raise Conflict(f"user {name!r} already exists") from exc

    def users(self) -> list[User]:
        with self._read() as s:
            return [_user(r) for r in s.scalars(sa.select(UserRow).order_by(UserRow.name))]

    def user(self, name: str) -> User:
        with self._read() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFound(f"no user {name!r}; `fedtre users list` shows them")
            return _user(row)

    def has_admin(self) -> bool:
        with self._read() as s:
            query = sa.select(UserRow.name).where(UserRow.role == "admin").limit(1)
            return s.execute(query).first() is not None

    def set_disabled(self, name: str, disabled: bool, by: str, now: datetime) -> User:
        with self._tx() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFound(f"no user {name!r}; `fedtre users list` shows them")
            row.disabled = disabled
            audit_log.record(
                s, actor=by, event="user.disabled" if disabled else "user.enabled",
                subject=f"user:{name}", now=now,
            )  # fmt: skip
            s.flush()
            return _user(row)

    # -- tokens ------------------------------------------------------------------------

    def add_token(
        self,
        token_id: str,
        user: str,
        token_hash: str,
        *,
        description: str,
        expires_at: datetime | None,
        by: str,
        now: datetime,
    ) -> Token:
        with self._tx() as s:
            owner = s.get(UserRow, user)
            if owner is None:
                raise NotFound(f"no user {user!r}; create them with `fedtre users add {user}`")
            if owner.disabled:
                raise Conflict(f"user {user!r} is disabled; enable them before issuing a token")
            row = TokenRow(
                token_id=token_id,
                user=user,
                token_hash=token_hash,
                description=description,
                created_at=now,
                created_by=by,
                expires_at=expires_at,
            )
            s.add(row)
            s.flush()
            audit_log.record(
                s, actor=by, event="token.issued", subject=f"token:{token_id}",
                details={"user": user, "expires_at": expires_at}, now=now,
            )  # fmt: skip
            return _token(row)

    def tokens(self, user: str | None = None) -> list[Token]:
        with self._read() as s:
            query = sa.select(TokenRow).order_by(TokenRow.user, TokenRow.created_at)
            if user:
                query = query.where(TokenRow.user == user)
            return [_token(r) for r in s.scalars(query)]

    def revoke_token(self, token_id: str, by: str, now: datetime) -> Token:
        with self._tx() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"no token {token_id!r}; `fedtre tokens list` shows them")
            if row.revoked_at is None:
                row.revoked_at = now
                audit_log.record(
                    s, actor=by, event="token.revoked", subject=f"token:{token_id}",
                    details={"user": row.user}, now=now,
                )  # fmt: skip
            s.flush()
            return _token(row)

    def credential(self, token_id: str) -> tuple[str, Token, User] | None:
        """Return (stored hash, token, its user) for token_id, or None if unknown."""
        with self._read() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                return None
            owner = s.get(UserRow, row.user)
            if owner is None:
                return None
            return row.token_hash, _token(row), _user(owner)

    def note_login(self, token_id: str, peer: str, now: datetime, window_s: float) -> bool:
        """Record a token's use; audit a login when it was idle for window_s. Return if audited."""
        with self._tx() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                return False
            last = _utc(row.last_used_at)
            if last is not None and (now - last).total_seconds() < window_s:
                return False
            row.last_used_at = now
            audit_log.record(
                s, actor=row.user, event="auth.login", subject=f"token:{token_id}",
                details={"peer": peer}, now=now,
            )  # fmt: skip
            return True

    # -- projects ----------------------------------------------------------------------

    def create_project(self, project: Project, by: str, now: datetime) -> Project:
        with self._tx() as s:
            return self.create_project_in(s, project, by, now)

    def create_project_in(self, s: Session, project: Project, by: str, now: datetime) -> Project:
        """create_project in the caller's transaction (an approved application's, say)."""
        row = s.get(ProjectRow, project.name)
        if row is not None and (row.created_by or row.approval_expires_at is not None):
            raise Conflict(f"project {project.name!r} already exists; change it with "
                           f"`fedtre projects update {project.name} ...`")  # fmt: skip
        # A row without governance fields is a project of an older coordinator, made
        # up on submission: adopting it keeps its jobs.
        if row is None:
            row = ProjectRow(name=project.name, created_at=now)
            s.add(row)
        row.description = project.description
        row.created_by = by
        row.nodes = list(project.nodes)
        row.datasets = list(project.datasets)
        row.analyses = list(project.analyses)
        row.approval_expires_at = project.approval_expires_at
        row.starts_at = project.starts_at
        row.approvals_required = project.approvals_required
        row.auto_approve = list(project.auto_approve)
        s.flush()
        for member in project.members:
            self._add_member(s, project.name, member, by, now)
        audit_log.record(
            s, actor=by, event="project.created", subject=f"project:{project.name}",
            details=_project_details(project), now=now,
        )  # fmt: skip
        return self._project(s, project.name)  # type: ignore[return-value]

    def update_project(self, name: str, changes: ProjectChanges, by: str, now: datetime) -> Project:
        with self._tx() as s:
            row = self._project_row(s, name)
            changed = {k: v for k, v in asdict(changes).items() if v is not None}
            for key, value in changed.items():
                setattr(row, key, list(value) if isinstance(value, tuple) else value)
            audit_log.record(
                s, actor=by, event="project.updated", subject=f"project:{name}",
                details=changed, now=now,
            )  # fmt: skip
            s.flush()
            return self._project(s, name)  # type: ignore[return-value]

    def add_member(self, project: str, user: str, by: str, now: datetime) -> Project:
        with self._tx() as s:
            self._project_row(s, project)
            if s.get(ProjectMemberRow, (project, user)) is None:
                self._add_member(s, project, user, by, now)
            return self._project(s, project)  # type: ignore[return-value]

    def remove_member(self, project: str, user: str, by: str, now: datetime) -> Project:
        with self._tx() as s:
            self._project_row(s, project)
            row = s.get(ProjectMemberRow, (project, user))
            if row is None:
                raise NotFound(f"{user!r} is not a member of project {project!r}")
            s.delete(row)
            audit_log.record(
                s, actor=by, event="project.member_removed", subject=f"project:{project}",
                details={"user": user}, now=now,
            )  # fmt: skip
            s.flush()
            return self._project(s, project)  # type: ignore[return-value]

    def project(self, name: str) -> Project | None:
        with self._read() as s:
            return self._project(s, name)

    def projects(self, names: Iterable[str] | None = None) -> list[Project]:
        with self._read() as s:
            query = sa.select(ProjectRow.name).order_by(ProjectRow.name)
            if names is not None:
                query = query.where(ProjectRow.name.in_(list(names)))
            return [p for n in s.scalars(query).all() if (p := self._project(s, n)) is not None]

    def member_of(self, user: str) -> list[str]:
        with self._read() as s:
            query = (
                sa.select(ProjectMemberRow.project)
                .where(ProjectMemberRow.user == user)
                .order_by(ProjectMemberRow.project)
            )
            return list(s.scalars(query))

    def _add_member(self, s: Session, project: str, user: str, by: str, now: datetime) -> None:
        if s.get(UserRow, user) is None:
            raise NotFound(f"no user {user!r}; create them with `fedtre users add {user}`")
        s.add(ProjectMemberRow(project=project, user=user, added_at=now, added_by=by))
        s.flush()
        audit_log.record(
            s, actor=by, event="project.member_added", subject=f"project:{project}",
            details={"user": user}, now=now,
        )  # fmt: skip

    @staticmethod
    def _project_row(s: Session, name: str) -> ProjectRow:
        row = s.get(ProjectRow, name)
        if row is None:
            raise NotFound(f"no project {name!r}; `fedtre projects list` shows them")
        return row

    @staticmethod
    def _project(s: Session, name: str) -> Project | None:
        row = s.get(ProjectRow, name)
        if row is None:
            return None
        members = s.scalars(
            sa.select(ProjectMemberRow.user)
            .where(ProjectMemberRow.project == name)
            .order_by(ProjectMemberRow.user)
        ).all()
        return Project(
            name=row.name,
            description=row.description or "",
            members=tuple(members),
            nodes=tuple(row.nodes or ()),
            datasets=tuple(row.datasets or ()),
            analyses=tuple(row.analyses or ()),
            approval_expires_at=_utc(row.approval_expires_at),
            starts_at=_utc(row.starts_at),
            approvals_required=row.approvals_required or 1,
            auto_approve=tuple(row.auto_approve or ()),
            created_at=_utc(row.created_at),  # type: ignore[arg-type]
            created_by=row.created_by or "",
        )

    # -- approvals and grants ----------------------------------------------------------

    def add_approval(self, job_id: int, approver: str, now: datetime) -> list[str]:
        """Record approver's approval of a pending job; return every approver so far.

        Raises NotFound for an unknown job, Conflict when it is not pending or when
        approver approved it already.
        """
        with self._tx() as s:
            job = s.scalars(
                sa.select(JobRow).where(JobRow.id == job_id).with_for_update()
            ).one_or_none()
            if job is None:
                raise NotFound(f"no job {job_id}; `fedtre jobs list` shows the jobs you can see")
            if job.state != "pending_approval":
                raise Conflict(
                    f"cannot approve job {job_id}: it is {job.state}, not pending approval"
                )
            if s.get(JobApprovalRow, (job_id, approver)) is not None:
                raise Conflict(f"{approver} has already approved job {job_id}")
            s.add(JobApprovalRow(job_id=job_id, approver=approver, approved_at=now))
            s.flush()
            approvers = self._approvers(s, job_id)
            audit_log.record(
                s, actor=approver, event="job.approval_recorded", subject=f"job:{job_id}",
                details={"approvals": len(approvers)}, now=now,
            )  # fmt: skip
            return approvers

    def approvers(self, job_ids: Sequence[int]) -> dict[int, list[str]]:
        """Return each job's approvers, in the order they approved."""
        if not job_ids:
            return {}
        with self._read() as s:
            rows = s.execute(
                sa.select(JobApprovalRow.job_id, JobApprovalRow.approver)
                .where(JobApprovalRow.job_id.in_(list(job_ids)))
                .order_by(JobApprovalRow.approved_at, JobApprovalRow.approver)
            ).all()
        found: dict[int, list[str]] = {}
        for job_id, approver in rows:
            found.setdefault(job_id, []).append(approver)
        return found

    def save_grant(self, job_id: int, grant: bytes, signature: bytes, now: datetime) -> None:
        """Store the signed job grant (replacing one from an approval that did not complete)."""
        with self._tx() as s:
            row = s.get(JobGrantRow, job_id) or JobGrantRow(job_id=job_id)
            row.grant, row.signature, row.created_at = grant, signature, now
            s.add(row)

    def grant(self, job_id: int) -> tuple[bytes, bytes] | None:
        with self._read() as s:
            row = s.get(JobGrantRow, job_id)
            return None if row is None else (bytes(row.grant), bytes(row.signature))

    # -- provenance of released outputs --------------------------------------------------

    def save_provenance(
        self, task_id: str, node: str, provenance: Provenance, now: datetime
    ) -> None:
        """Keep a released output's provenance; the first one received for a task stays."""
        with self._tx() as s:
            if s.get(ResultProvenanceRow, task_id) is not None:
                return
            s.add(
                ResultProvenanceRow(
                    task_id=task_id,
                    node=node,
                    agent_version=provenance.agent_version[:64],
                    dataset_version=provenance.dataset_version[:200],
                    statement=provenance.statement,
                    signature=provenance.signature,
                    certificate=provenance.certificate,
                    received_at=now,
                )
            )

    def provenance(self, task_ids: Sequence[str]) -> dict[str, Provenance]:
        """Return the provenance kept for each of task_ids that has one."""
        if not task_ids:
            return {}
        with self._read() as s:
            rows = s.scalars(
                sa.select(ResultProvenanceRow).where(
                    ResultProvenanceRow.task_id.in_(list(task_ids))
                )
            ).all()
            return {
                r.task_id: Provenance(
                    r.agent_version,
                    r.dataset_version,
                    bytes(r.statement),
                    bytes(r.signature),
                    bytes(r.certificate),
                )
                for r in rows
            }

    @staticmethod
    def _approvers(s: Session, job_id: int) -> list[str]:
        return list(
            s.scalars(
                sa.select(JobApprovalRow.approver)
                .where(JobApprovalRow.job_id == job_id)
                .order_by(JobApprovalRow.approved_at, JobApprovalRow.approver)
            )
        )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _user(row: UserRow) -> User:
    return User(
        name=row.name,
        role=row.role,
        disabled=bool(row.disabled),
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        created_by=row.created_by or "",
    )


def _token(row: TokenRow) -> Token:
    return Token(
        token_id=row.token_id,
        user=row.user,
        description=row.description or "",
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        created_by=row.created_by or "",
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
        last_used_at=_utc(row.last_used_at),
    )


def _project_details(project: Project) -> dict[str, Any]:
    return {
        "members": list(project.members),
        "nodes": list(project.nodes),
        "datasets": list(project.datasets),
        "analyses": list(project.analyses),
        "approval_expires_at": project.approval_expires_at,
        "starts_at": project.starts_at,
        "approvals_required": project.approvals_required,
        "auto_approve": list(project.auto_approve),
    }
