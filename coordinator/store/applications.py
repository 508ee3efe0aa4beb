"""Data Access Requests, committee decisions, publications and affiliations, in SQL.

Every change writes its audit entry in the same transaction; an approval creates its
project (and a withdrawal lapses it) in that transaction too, so an application is never
approved without its project, nor a project withdrawn without its application.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from coordinator.domain.applications import (
    Affiliation,
    Application,
    ApplicationForm,
    ApplicationState,
    Decision,
    Outcome,
    Scope,
    Verdict,
)
from coordinator.domain.governance import Project
from coordinator.store import audit_log
from coordinator.store.governance import GovernanceStore, UserRow
from coordinator.store.schema import Base, ProjectRow
from fedtre.errors import Conflict, NotFound

if TYPE_CHECKING:
    from coordinator.store.store import Store

# States in which an application holds its project name against other applications.
_HOLDS_NAME = ("submitted", "returned", "approved", "withdrawn")


class ApplicationRow(Base):
    __tablename__ = "dar_applications"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    project_name: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    submitted_by: Mapped[str] = mapped_column(ForeignKey("users.name"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The ApplicationForm's fields (dates as YYYY-MM-DD).
    form: Mapped[dict[str, Any]] = mapped_column(JSON)
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    approved_scope: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DecisionRow(Base):
    __tablename__ = "dar_decisions"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    application_id: Mapped[int] = mapped_column(ForeignKey("dar_applications.id"), index=True)
    approver: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer)
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PublicationRow(Base):
    __tablename__ = "dar_publications"

    application_id: Mapped[int] = mapped_column(ForeignKey("dar_applications.id"), primary_key=True)
    publication: Mapped[str] = mapped_column(String(300), primary_key=True)
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AffiliationRow(Base):
    """A person's organisation and accreditation, as an admin recorded it."""

    __tablename__ = "affiliations"

    user: Mapped[str] = mapped_column(ForeignKey("users.name"), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(300), index=True)
    sector: Mapped[str] = mapped_column(String(100), default="")
    accredited: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(64))


class ApplicationStore:
    """Applications and affiliations, in the Store's database and transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- affiliations ------------------------------------------------------------------

    def set_affiliation(self, affiliation: Affiliation) -> Affiliation:
        with self._store._tx() as s:
            if s.get(UserRow, affiliation.user) is None:
                raise NotFound(
                    f"no user {affiliation.user!r}; create them with "
                    f"`fedtre users add {affiliation.user}`"
                )
            row = s.get(AffiliationRow, affiliation.user) or AffiliationRow(user=affiliation.user)
            row.organisation = affiliation.organisation
            row.sector = affiliation.sector
            row.accredited = affiliation.accredited
            row.recorded_at = affiliation.recorded_at
            row.recorded_by = affiliation.recorded_by
            s.add(row)
            s.flush()
            audit_log.record(
                s, actor=affiliation.recorded_by, event="affiliation.recorded",
                subject=f"user:{affiliation.user}",
                details={"organisation": affiliation.organisation, "sector": affiliation.sector,
                         "accredited": affiliation.accredited},
                now=affiliation.recorded_at,
            )  # fmt: skip
            return _affiliation(row)

    def affiliations(self, users: list[str] | None = None) -> dict[str, Affiliation]:
        with self._store._read() as s:
            query = sa.select(AffiliationRow).order_by(AffiliationRow.user)
            if users is not None:
                query = query.where(AffiliationRow.user.in_(users))
            return {r.user: _affiliation(r) for r in s.scalars(query)}

    # -- applications ------------------------------------------------------------------

    def submit(
        self, form: ApplicationForm, by: str, approvals_required: int, now: datetime
    ) -> Application:
        """Record a new application; raise Conflict when its project name is taken."""
        with self._store._tx() as s:
            _check_name_free(s, form.project_name)
            row = ApplicationRow(
                project_name=form.project_name,
                state=ApplicationState.SUBMITTED.value,
                submitted_by=by,
                version=1,
                form=_form_json(form),
                approvals_required=approvals_required,
                submitted_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            audit_log.record(
                s, actor=by, event="application.submitted", subject=f"application:{row.id}",
                details=_summary(form), now=now,
            )  # fmt: skip
            return self._application(s, row)

    def resubmit(
        self, application: Application, form: ApplicationForm, by: str, now: datetime
    ) -> Application:
        """Replace a returned application's form; it is submitted again as a new version."""
        with self._store._tx() as s:
            row = _locked(s, application.id)
            if row.state != ApplicationState.RETURNED.value or row.version != application.version:
                raise Conflict(f"application {application.id} changed meanwhile; look again")
            if form.project_name != row.project_name:
                _check_name_free(s, form.project_name)
            row.project_name = form.project_name
            row.form = _form_json(form)
            row.version += 1
            row.state = ApplicationState.SUBMITTED.value
            row.updated_at = now
            s.flush()
            audit_log.record(
                s, actor=by, event="application.resubmitted", subject=f"application:{row.id}",
                details={"version": row.version, **_summary(form)}, now=now,
            )  # fmt: skip
            return self._application(s, row)

    def record_decision(
        self,
        before: Application,
        outcome: Outcome,
        project: Project | None,
        governance: GovernanceStore,
        now: datetime,
    ) -> Application:
        """Store a decision taken on `before`; create (or lapse) the project in the same
        transaction. Raises Conflict when the application changed since it was read."""
        decision = outcome.decision
        after = outcome.application
        with self._store._tx() as s:
            row = _locked(s, before.id)
            decided = s.scalar(
                sa.select(sa.func.count()).where(DecisionRow.application_id == before.id)
            )
            if row.state != before.state.value or decided != len(before.decisions):
                raise Conflict(
                    f"application {before.id} was decided on meanwhile; look at it again"
                )
            s.add(
                DecisionRow(
                    application_id=before.id,
                    approver=decision.approver,
                    verdict=decision.verdict.value,
                    comment=decision.comment,
                    version=decision.version,
                    scope=_scope_json(decision.scope),
                    at=decision.at,
                )
            )
            row.state = after.state.value
            row.updated_at = now
            if outcome.approved is not None:
                row.approved_scope = _scope_json(outcome.approved)
                row.approved_at = after.approved_at
            s.flush()
            audit_log.record(
                s, actor=decision.approver, event=_EVENTS[decision.verdict],
                subject=f"application:{before.id}",
                details={"version": decision.version, "state": after.state.value,
                         "approvals": len(after.approvals()), "comment": decision.comment,
                         "scope": _scope_json(decision.scope)},
                now=now,
            )  # fmt: skip
            if project is not None:
                governance.create_project_in(s, project, decision.approver, now)
            if outcome.withdrawn:
                _lapse(s, row.project_name, decision.approver, before.id, now)
            return self._application(s, row)

    def add_publication(
        self, application_id: int, publication: str, by: str, now: datetime
    ) -> Application:
        with self._store._tx() as s:
            row = _locked(s, application_id)
            if s.get(PublicationRow, (application_id, publication)) is None:
                s.add(
                    PublicationRow(
                        application_id=application_id,
                        publication=publication,
                        added_by=by,
                        added_at=now,
                    )
                )
                s.flush()
                audit_log.record(
                    s, actor=by, event="application.publication_added",
                    subject=f"application:{application_id}",
                    details={"publication": publication}, now=now,
                )  # fmt: skip
            return self._application(s, row)

    def application(self, application_id: int) -> Application | None:
        with self._store._read() as s:
            row = s.get(ApplicationRow, application_id)
            return None if row is None else self._application(s, row)

    def applications(self, state: str = "") -> list[Application]:
        with self._store._read() as s:
            query = sa.select(ApplicationRow).order_by(ApplicationRow.id)
            if state:
                query = query.where(ApplicationRow.state == state)
            return [self._application(s, r) for r in s.scalars(query)]

    def for_project(self, project: str) -> Application | None:
        """The approved (or withdrawn) application that created project, if any."""
        with self._store._read() as s:
            row = s.scalars(
                sa.select(ApplicationRow).where(
                    ApplicationRow.project_name == project,
                    ApplicationRow.approved_at.is_not(None),
                )
            ).first()
            return None if row is None else self._application(s, row)

    @staticmethod
    def _application(s: Session, row: ApplicationRow) -> Application:
        decisions = s.scalars(
            sa.select(DecisionRow)
            .where(DecisionRow.application_id == row.id)
            .order_by(DecisionRow.id)
        ).all()
        publications = s.scalars(
            sa.select(PublicationRow.publication)
            .where(PublicationRow.application_id == row.id)
            .order_by(PublicationRow.added_at, PublicationRow.publication)
        ).all()
        form = _form(row.form)
        affiliations = {
            r.user: r
            for r in s.scalars(
                sa.select(AffiliationRow).where(AffiliationRow.user.in_(list(form.applicants)))
            )
        }
        submitter = affiliations.get(row.submitted_by)
        return Application(
            id=row.id,
            state=ApplicationState(row.state),
            form=form,
            submitted_by=row.submitted_by,
            version=row.version,
            submitted_at=_utc(row.submitted_at),  # type: ignore[arg-type]
            updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
            approvals_required=row.approvals_required,
            sector=submitter.sector if submitter else "",
            accredited=tuple(
                a for a in form.applicants if a in affiliations and affiliations[a].accredited
            ),  # fmt: skip
            decisions=tuple(
                Decision(
                    approver=d.approver,
                    verdict=Verdict(d.verdict),
                    comment=d.comment or "",
                    at=_utc(d.at),  # type: ignore[arg-type]
                    version=d.version,
                    scope=_scope(d.scope),
                )
                for d in decisions
            ),
            approved_scope=_scope(row.approved_scope),
            approved_at=_utc(row.approved_at),
            publications=tuple(publications),
        )


_EVENTS = {
    Verdict.APPROVE: "application.approved",
    Verdict.REJECT: "application.rejected",
    Verdict.RETURN: "application.returned",
    Verdict.WITHDRAW: "application.withdrawn",
}


def _check_name_free(s: Session, project_name: str) -> None:
    if s.get(ProjectRow, project_name) is not None:
        raise Conflict(f"a project {project_name!r} exists already; name your project differently")
    taken = s.scalar(
        sa.select(ApplicationRow.id).where(
            ApplicationRow.project_name == project_name, ApplicationRow.state.in_(_HOLDS_NAME)
        )
    )
    if taken is not None:
        raise Conflict(
            f"application {taken} already asks for a project {project_name!r}; name yours "
            "differently"
        )


def _lapse(s: Session, project: str, by: str, application_id: int, now: datetime) -> None:
    row = s.get(ProjectRow, project)
    if row is None:
        return
    if row.approval_expires_at is None or _utc(row.approval_expires_at) > now:  # type: ignore[operator]
        row.approval_expires_at = now
        audit_log.record(
            s, actor=by, event="project.updated", subject=f"project:{project}",
            details={"approval_expires_at": now, "withdrawn": f"application:{application_id}"},
            now=now,
        )  # fmt: skip


def _locked(s: Session, application_id: int) -> ApplicationRow:
    row = s.scalars(
        sa.select(ApplicationRow).where(ApplicationRow.id == application_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound(f"no application {application_id}")
    return row


def _summary(form: ApplicationForm) -> dict[str, Any]:
    """What the audit log keeps of a form: who, for what; the texts are in the table."""
    return {
        "project": form.project_name,
        "applicants": list(form.applicants),
        "organisation": form.organisation,
        "nodes": list(form.nodes),
        "datasets": list(form.datasets),
        "analyses": list(form.analyses),
        "end_date": form.end_date.isoformat(),
    }


def _form_json(form: ApplicationForm) -> dict[str, Any]:
    values = asdict(form)
    for key in ("start_date", "end_date"):
        values[key] = values[key].isoformat()
    for key, value in values.items():
        if isinstance(value, tuple):
            values[key] = list(value)
    return values


def _form(values: dict[str, Any]) -> ApplicationForm:
    fields = dict(values)
    for key in ("applicants", "funders", "nodes", "datasets", "analyses"):
        fields[key] = tuple(fields[key])
    for key in ("start_date", "end_date"):
        fields[key] = date.fromisoformat(fields[key])
    return ApplicationForm(**fields)


def _scope_json(scope: Scope | None) -> dict[str, Any] | None:
    if scope is None:
        return None
    return {
        "nodes": list(scope.nodes),
        "datasets": list(scope.datasets),
        "analyses": list(scope.analyses),
        "end_date": scope.end_date.isoformat(),
    }


def _scope(values: dict[str, Any] | None) -> Scope | None:
    if values is None:
        return None
    return Scope(
        tuple(values["nodes"]),
        tuple(values["datasets"]),
        tuple(values["analyses"]),
        date.fromisoformat(values["end_date"]),
    )


def _affiliation(row: AffiliationRow) -> Affiliation:
    return Affiliation(
        user=row.user,
        organisation=row.organisation,
        sector=row.sector or "",
        accredited=bool(row.accredited),
        recorded_at=_utc(row.recorded_at),  # type: ignore[arg-type]
        recorded_by=row.recorded_by,
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
