"""Data Access Request use cases: apply, decide, resubmit, publish; and the public register.

Independent of gRPC (coordinator.rpc.application_servicer is the transport). The rules
are in coordinator.domain.applications; every refusal after authentication is audited
here as "application.refused" with the reason, then raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Any, NoReturn

from coordinator.admin import Admin
from coordinator.domain import applications as rules
from coordinator.domain import register
from coordinator.domain.applications import (
    Affiliation,
    Application,
    ApplicationForm,
    ApplicationState,
    Narrowing,
    Scope,
    Verdict,
)
from coordinator.domain.governance import Project
from coordinator.store.applications import ApplicationStore
from coordinator.store.store import Store
from fedtre.analyses import CATALOGUE
from fedtre.errors import Conflict, FedtreError, InvalidRequest, NotFound, PermissionDenied
from fedtre.identity.peer import Identity

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_COMMITTEE = 10


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Applications:
    """The data access committee's workflow over the store (each step audited there)."""

    def __init__(
        self, store: Store, admin: Admin, clock: Clock = _utc_now, approvals_required: int = 1
    ) -> None:
        if not 1 <= approvals_required <= MAX_COMMITTEE:
            raise InvalidRequest(
                f"the committee's approvals required must be 1 to {MAX_COMMITTEE}, "
                f"not {approvals_required}"
            )
        self.store = ApplicationStore(store)
        self.governance = store.governance
        self._admin = admin
        self.clock = clock
        self.approvals_required = approvals_required
        admin.project_guards.append(self._within_approval)

    # -- applicants --------------------------------------------------------------------

    def submit(self, by: Identity, form: ApplicationForm) -> Application:
        """Record a new application; raise InvalidRequest, PermissionDenied or Conflict."""
        now = self.clock()
        checked = self._checked(by, form, now, subject="")
        application = self.store.submit(checked, by.name, self.approvals_required, now)
        logger.info("application submitted", extra={"application": application.id, "by": by.name})
        return application

    def resubmit(self, by: Identity, application_id: int, form: ApplicationForm) -> Application:
        """Change a returned application and submit it again."""
        current = self.application(by, application_id)
        subject = f"application:{application_id}"
        problem = rules.edit_problem(by, current)
        if problem is not None:
            self._refuse(by, subject, problem)
        now = self.clock()
        checked = self._checked(by, form, now, subject=subject)
        return self.store.resubmit(current, checked, by.name, now)

    def add_publication(self, by: Identity, application_id: int, publication: str) -> Application:
        current = self.application(by, application_id)
        publication = publication.strip()
        problem = rules.publication_problem(by, current, publication)
        if problem is not None:
            self._refuse(by, f"application:{application_id}", problem)
        return self.store.add_publication(application_id, publication, by.name, self.clock())

    # -- readers -----------------------------------------------------------------------

    def application(self, viewer: Identity, application_id: int) -> Application:
        """The application, if viewer may read it; NotFound alike if missing or not theirs."""
        found = self.store.application(application_id)
        if found is None or not rules.can_read(viewer, found):
            if found is not None:
                self.governance.audit(
                    actor=viewer.name, event="application.refused",
                    subject=f"application:{application_id}",
                    details={"reason": "not an applicant", "action": "read"}, now=self.clock(),
                )  # fmt: skip
            raise NotFound(
                f"no application {application_id} that you can see; "
                "`fedtre applications list` shows yours"
            )
        return found

    def applications(self, viewer: Identity, state: str = "") -> list[Application]:
        if state and state not in {s.value for s in ApplicationState}:
            raise InvalidRequest(
                f"state must be one of {', '.join(s.value for s in ApplicationState)}"
            )
        return [a for a in self.store.applications(state) if rules.can_read(viewer, a)]

    def for_project(self, node: Identity, project: str) -> Application:
        """The approved application behind project, for an agent serving the project."""
        found = self.store.for_project(project)
        scope = found.approved_scope if found else None
        if found is None or scope is None or node.name not in scope.nodes:
            raise NotFound(f"no approved application for a project {project!r} on your node")
        return found

    # -- the committee -----------------------------------------------------------------

    def decide(
        self,
        by: Identity,
        application_id: int,
        verdict: str,
        comment: str = "",
        scope: Narrowing | None = None,
    ) -> Application:
        """Approve, reject, return or withdraw; approval by the last approver needed
        creates the project. Raises as coordinator.domain.applications.decide does."""
        try:
            chosen = Verdict(verdict)
        except ValueError:
            raise InvalidRequest(
                f"decision must be one of {', '.join(v.value for v in Verdict)}, not {verdict!r}"
            ) from None
        current = self.application(by, application_id)
        now = self.clock()
        subject = f"application:{application_id}"
        try:
            outcome = rules.decide(current, by, chosen, comment, scope, now)
        except FedtreError as exc:
            self._refuse(by, subject, exc, verdict=chosen.value)
        project = None
        if outcome.approved is not None:
            project = self._project(outcome.application, outcome.approved, now)
        decided = self.store.record_decision(current, outcome, project, self.governance, now)
        logger.info(
            "application decided",
            extra={"application": application_id, "decision": chosen.value, "by": by.name,
                   "state": decided.state.value},
        )  # fmt: skip
        return decided

    def _project(self, application: Application, scope: Scope, now: datetime) -> Project:
        """The project an approval creates, checked as an admin's would be."""
        form = application.form
        project = Project(
            name=form.project_name,
            description=f"{form.title} (application {application.id})",
            members=form.applicants,
            nodes=scope.nodes,
            datasets=scope.datasets,
            analyses=scope.analyses,
            approval_expires_at=scope.expires_at(),
            starts_at=datetime.combine(form.start_date, time(0, 0), tzinfo=UTC),
            # Jobs are approved as in any project; the committee approved the use.
            approvals_required=1,
            auto_approve=(),
            created_at=now,
            created_by="",
        )
        return self._admin.checked_project(project)

    def _within_approval(self, by: Identity, current: Project, proposed: Project) -> None:
        """Refuse a change that takes a committee-approved project past its approval."""
        found = self.store.for_project(current.name)
        if found is None or proposed.approval_expires_at is None:
            return
        scope = Scope(
            proposed.nodes,
            proposed.datasets,
            proposed.analyses,
            proposed.approval_expires_at.astimezone(UTC).date(),
        )
        problem = rules.widening_problem(found, scope)
        reopened = (
            current.approval_expires_at is not None
            and proposed.approval_expires_at > current.approval_expires_at
        )
        approved_start = datetime.combine(found.form.start_date, time(0, 0), tzinfo=UTC)
        moved = proposed.starts_at if proposed.starts_at != current.starts_at else None
        if not problem and moved is not None and moved < approved_start:
            problem = (
                f"the committee approved project {current.name!r} from "
                f"{found.form.start_date}; it may not start earlier (apply again to change it)"
            )
        if found.state is ApplicationState.WITHDRAWN and reopened:
            problem = (
                f"project {current.name!r} was withdrawn (application {found.id}); "
                "apply again (`fedtre apply`) to use the data again"
            )
        if problem:
            self._refuse(by, f"project:{current.name}", Conflict(problem))

    # -- affiliations ------------------------------------------------------------------

    def set_affiliation(
        self, by: Identity, user: str, organisation: str, sector: str, accredited: bool
    ) -> Affiliation:
        organisation, sector = organisation.strip(), sector.strip()
        if not organisation:
            raise InvalidRequest("give the organisation's name")
        rules.check_text(organisation, "the organisation's name", rules.MAX_SHORT)
        rules.check_text(sector, "the sector", 100)
        return self.store.set_affiliation(
            Affiliation(user, organisation, sector, accredited, self.clock(), by.name)
        )

    def affiliations(self) -> list[Affiliation]:
        return list(self.store.affiliations().values())

    # -- the public register -----------------------------------------------------------

    def register(self) -> list[dict[str, Any]]:
        """The Data Use Register's entries (public: no authentication is needed to read it)."""
        approved = [a for a in self.store.applications() if a.approved_scope is not None]
        projects = {
            p.name: register.ProjectState(p.name, p.approval_expires_at, p.starts_at)
            for p in self.governance.projects([a.form.project_name for a in approved])
        }
        return register.entries(approved, projects, self.clock())

    # -- helpers -----------------------------------------------------------------------

    def _checked(
        self, by: Identity, form: ApplicationForm, now: datetime, subject: str
    ) -> ApplicationForm:
        checked = rules.checked_form(form, by.name, now.date())
        unknown = sorted(set(checked.analyses) - set(CATALOGUE))
        if unknown:
            raise InvalidRequest(
                f"unknown analysis {unknown}; the catalogue has {', '.join(CATALOGUE)}"
            )
        known = {u.name for u in self.governance.users()}
        missing = [a for a in checked.applicants if a not in known]
        if missing:
            raise InvalidRequest(f"no user {missing}; every applicant needs a fedtre account")
        affiliations = self.store.affiliations(list(checked.applicants))
        problem = rules.organisation_problem(checked, affiliations)
        if problem:
            self._refuse(by, subject, PermissionDenied(problem), project=checked.project_name)
        return checked

    def _refuse(self, by: Identity, subject: str, exc: Exception, **details: str) -> NoReturn:
        self.governance.audit(
            actor=by.name,
            event="application.refused",
            subject=subject,
            details={"reason": str(exc), **details},
            now=self.clock(),
        )
        logger.warning("application refused", extra={"by": by.name, "subject": subject})
        raise exc


def register_pages(applications: Applications) -> dict[str, Callable[[], tuple[str, bytes]]]:
    """The Data Use Register as public pages of the ops HTTP server (fedtre.ops_http)."""
    return {
        "/register.json": lambda: (
            "application/json; charset=utf-8",
            register.to_json(applications.register()),
        ),
        "/register.csv": lambda: (
            "text/csv; charset=utf-8",
            register.to_csv(applications.register()),
        ),
    }
