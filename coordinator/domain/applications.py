"""Data Access Requests: the Five Safes application, the committee's rules, the approved scope.

An application's life (every change is audited by the store):

    submitted ─► approved (approvals_required different approvers, none an applicant)
        │   └──► rejected
        └──► returned ─► (edited by an applicant) submitted again, version + 1
    approved ─► withdrawn (by the committee or an applicant: the project lapses at once)

Approval creates the project with the requested scope narrowed to what every approving
approver agreed to, expiring at the end of the approved end date. An approved or
rejected application is never edited again; a wider scope needs a new application.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time

from coordinator.domain.governance import OVERSEERS
from fedtre.errors import Conflict, InvalidRequest, PermissionDenied
from fedtre.identity.peer import NAME_PATTERN, NAME_RULE, Identity

# People, nodes, datasets and analyses as an application names them (a project's rule).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
MAX_TEXT = 5000
MAX_SHORT = 300
MAX_NAMES = 100
# The UK GDPR Article 6 and Article 9 conditions an application may name.
ARTICLE6 = ("6(1)(a)", "6(1)(b)", "6(1)(c)", "6(1)(d)", "6(1)(e)", "6(1)(f)")
ARTICLE9 = (
    "9(2)(a)", "9(2)(b)", "9(2)(c)", "9(2)(d)", "9(2)(e)",
    "9(2)(f)", "9(2)(g)", "9(2)(h)", "9(2)(i)", "9(2)(j)",
)  # fmt: skip


class ApplicationState(enum.StrEnum):
    SUBMITTED = "submitted"
    RETURNED = "returned"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class Verdict(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"
    WITHDRAW = "withdraw"


@dataclass(frozen=True)
class Scope:
    """What a project may use, and the last day it may use it."""

    nodes: tuple[str, ...]
    datasets: tuple[str, ...]
    analyses: tuple[str, ...]
    end_date: date

    def expires_at(self) -> datetime:
        """The end of end_date, UTC: approval runs through that day."""
        return datetime.combine(self.end_date, time(23, 59, 59), tzinfo=UTC)


@dataclass(frozen=True)
class Narrowing:
    """How an approver narrows the requested scope; an empty part keeps the request's."""

    nodes: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    analyses: tuple[str, ...] = ()
    end_date: date | None = None


@dataclass(frozen=True)
class ApplicationForm:
    """The Five Safes fields the applicants fill in."""

    applicants: tuple[str, ...]
    organisation: str
    project_name: str
    title: str
    lay_summary: str
    public_benefit: str
    technical_summary: str
    funders: tuple[str, ...]
    start_date: date
    end_date: date
    article6: str
    article9: str
    duty_of_confidentiality: str
    national_data_opt_out: str
    nodes: tuple[str, ...]
    datasets: tuple[str, ...]
    analyses: tuple[str, ...]
    linkage: str
    expected_outputs: str

    @property
    def scope(self) -> Scope:
        return Scope(self.nodes, self.datasets, self.analyses, self.end_date)


@dataclass(frozen=True)
class Decision:
    approver: str
    verdict: Verdict
    comment: str
    at: datetime
    version: int
    scope: Scope | None = None


@dataclass(frozen=True)
class Affiliation:
    """A person's organisation, its sector and their accreditation, as an admin recorded it."""

    user: str
    organisation: str
    sector: str
    accredited: bool
    recorded_at: datetime
    recorded_by: str


@dataclass(frozen=True)
class Application:
    id: int
    state: ApplicationState
    form: ApplicationForm
    submitted_by: str
    version: int
    submitted_at: datetime
    updated_at: datetime
    approvals_required: int
    sector: str = ""
    accredited: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()
    approved_scope: Scope | None = None
    approved_at: datetime | None = None
    publications: tuple[str, ...] = ()

    def approvals(self) -> tuple[Decision, ...]:
        """The approvals of the current version."""
        return tuple(
            d for d in self.decisions if d.verdict is Verdict.APPROVE and d.version == self.version
        )

    @property
    def latest_decision_at(self) -> datetime | None:
        return max((d.at for d in self.decisions), default=None)


@dataclass(frozen=True)
class Outcome:
    """What one decision does: the application after it, and the project scope if approved
    (or withdrawn: the project then lapses at the decision's time)."""

    application: Application
    decision: Decision
    approved: Scope | None = None

    @property
    def withdrawn(self) -> bool:
        return self.decision.verdict is Verdict.WITHDRAW


def check_text(value: str, name: str, limit: int) -> None:
    """Raise InvalidRequest if value is longer than limit or holds control characters."""
    if len(value) > limit:
        raise InvalidRequest(f"{name} is longer than {limit} characters; shorten it")
    if any(not c.isprintable() and c not in "\n\t" for c in value):
        raise InvalidRequest(f"{name} holds control characters; use plain text")


# -- checking a form ------------------------------------------------------------------


def checked_form(form: ApplicationForm, submitter: str, today: date) -> ApplicationForm:
    """Return form with names trimmed and the submitter among the applicants.

    Raises InvalidRequest naming the first missing or malformed field and how to fix it.
    """
    applicants = _names(form.applicants, "applicant")
    if submitter not in applicants:
        applicants = (submitter, *applicants)
    required = {
        "organisation": form.organisation,
        "project_name": form.project_name,
        "title": form.title,
        "lay_summary": form.lay_summary,
        "public_benefit": form.public_benefit,
        "technical_summary": form.technical_summary,
        "duty_of_confidentiality": form.duty_of_confidentiality,
        "national_data_opt_out": form.national_data_opt_out,
        "expected_outputs": form.expected_outputs,
    }
    for name, value in required.items():
        if not value.strip():
            raise InvalidRequest(f"the application needs {name} (--{name.replace('_', '-')})")
    for name, value in {**required, "linkage": form.linkage}.items():
        limit = MAX_SHORT if name in ("organisation", "project_name", "title") else MAX_TEXT
        check_text(value, name, limit)
    if not NAME_PATTERN.fullmatch(form.project_name.strip()):
        raise InvalidRequest(
            f"project_name {form.project_name.strip()!r} is not allowed: use {NAME_RULE} characters"
        )
    if form.article6 not in ARTICLE6:
        raise InvalidRequest(
            f"article6 must be a UK GDPR Article 6 lawful basis, one of {', '.join(ARTICLE6)}"
        )
    if form.article9 not in ARTICLE9:
        raise InvalidRequest(
            f"article9 must be a UK GDPR Article 9 condition, one of {', '.join(ARTICLE9)}"
        )
    if form.end_date < form.start_date:
        raise InvalidRequest("end_date is before start_date; give dates as YYYY-MM-DD")
    if form.end_date <= today:
        raise InvalidRequest(f"end_date {form.end_date} has passed; give a future date")
    nodes = _names(form.nodes, "node")
    datasets = _names(form.datasets, "dataset")
    analyses = _names(form.analyses, "analysis")
    if not nodes or not datasets or not analyses:
        raise InvalidRequest(
            "an application names the nodes, datasets and analyses it asks for, e.g. "
            "--nodes tre-a,tre-b --datasets cohort --analyses count,crosstab"
        )
    funders = tuple(f.strip() for f in form.funders if f.strip())
    for funder in funders:
        check_text(funder, "a funder's name", MAX_SHORT)
    return replace(
        form,
        applicants=applicants,
        organisation=form.organisation.strip(),
        project_name=form.project_name.strip(),
        title=form.title.strip(),
        funders=funders,
        nodes=nodes,
        datasets=datasets,
        analyses=analyses,
    )


def organisation_problem(form: ApplicationForm, affiliations: dict[str, Affiliation]) -> str:
    """Why some applicant may not apply for form's organisation; empty when all may."""
    outside = [
        a
        for a in form.applicants
        if a not in affiliations or affiliations[a].organisation != form.organisation
    ]
    if not outside:
        return ""
    return (
        f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not recorded as "
        f"belonging to {form.organisation!r}; an admin records it with "
        f"`fedtre organisations affiliate {form.organisation!r} USER --sector SECTOR`"
    )


# -- who may do what ------------------------------------------------------------------


def can_read(identity: Identity, application: Application) -> bool:
    """Applicants read their application; approvers and admins read every one."""
    return identity.role in OVERSEERS or identity.name in application.form.applicants


def edit_problem(identity: Identity, application: Application) -> Exception | None:
    """Why identity may not edit and resubmit application now; None when they may."""
    if identity.name not in application.form.applicants:
        return PermissionDenied(f"only an applicant of application {application.id} may change it")
    if application.state is ApplicationState.RETURNED:
        return None
    if application.state is ApplicationState.SUBMITTED:
        return Conflict(
            f"application {application.id} is with the committee; it can be changed once "
            "they return it"
        )
    return Conflict(
        f"application {application.id} is {application.state}: it can no longer be changed; "
        "apply again (`fedtre apply`) for a different scope"
    )


def decide(
    application: Application,
    approver: Identity,
    verdict: Verdict,
    comment: str,
    narrowed: Narrowing | None,
    now: datetime,
) -> Outcome:
    """Apply one decision (approve, reject or return a submitted application; withdraw
    an approved one); return the outcome.

    Raises PermissionDenied (an applicant deciding, a role outside the committee),
    Conflict (not awaiting this decision, or approved already by this approver) or
    InvalidRequest (no comment, a scope wider than requested, approvers' scopes disjoint).
    """
    if verdict is Verdict.WITHDRAW:
        return _withdraw(application, approver, comment, now)
    if approver.role not in OVERSEERS:
        raise PermissionDenied("only approvers and admins sit on the data access committee")
    if approver.name in application.form.applicants:
        raise PermissionDenied(
            f"{approver.name} is an applicant of application {application.id}; nobody "
            "decides their own application: another approver must"
        )
    if application.state is not ApplicationState.SUBMITTED:
        raise Conflict(
            f"application {application.id} is {application.state}, not awaiting a decision"
        )
    comment = comment.strip()
    if verdict is not Verdict.APPROVE and not comment:
        raise InvalidRequest(f"say why (--comment TEXT) when you {verdict} an application")
    check_text(comment, "the comment", MAX_TEXT)
    if verdict is not Verdict.APPROVE:
        decision = Decision(approver.name, verdict, comment, now, application.version)
        state = (
            ApplicationState.REJECTED if verdict is Verdict.REJECT else ApplicationState.RETURNED
        )
        return Outcome(_after(application, decision, state, now), decision)
    if any(d.approver == approver.name for d in application.approvals()):
        raise Conflict(
            f"{approver.name} has already approved application {application.id}; "
            "another approver must"
        )
    scope = narrow(application.form.scope, narrowed, now.date())
    decision = Decision(approver.name, verdict, comment, now, application.version, scope)
    approvals = (*application.approvals(), decision)
    if len(approvals) < application.approvals_required:
        return Outcome(_after(application, decision, ApplicationState.SUBMITTED, now), decision)
    agreed = _intersection([d.scope for d in approvals if d.scope is not None])
    after = _after(application, decision, ApplicationState.APPROVED, now)
    return Outcome(replace(after, approved_scope=agreed, approved_at=now), decision, agreed)


def _withdraw(application: Application, by: Identity, comment: str, now: datetime) -> Outcome:
    """An approved application's project is withdrawn by the committee or an applicant."""
    if by.role not in OVERSEERS and by.name not in application.form.applicants:
        raise PermissionDenied(
            "only the data access committee or an applicant may withdraw an application"
        )
    if application.state is not ApplicationState.APPROVED:
        raise Conflict(
            f"application {application.id} is {application.state}; only an approved "
            "application is withdrawn (a submitted one is rejected or returned)"
        )
    comment = comment.strip()
    if not comment:
        raise InvalidRequest("say why (--comment TEXT) when you withdraw an application")
    check_text(comment, "the comment", MAX_TEXT)
    decision = Decision(by.name, Verdict.WITHDRAW, comment, now, application.version)
    return Outcome(_after(application, decision, ApplicationState.WITHDRAWN, now), decision)


def publication_problem(
    identity: Identity, application: Application, publication: str
) -> Exception | None:
    """Why identity may not add publication to application; None when they may."""
    if (
        not publication
        or len(publication) > MAX_SHORT
        or any(c.isspace() or not c.isprintable() for c in publication)
    ):
        return InvalidRequest(
            f"give one DOI or URL of at most {MAX_SHORT} characters, without spaces"
        )
    if identity.name not in application.form.applicants:
        return PermissionDenied(
            f"only an applicant of application {application.id} adds its publications"
        )
    if application.state not in (ApplicationState.APPROVED, ApplicationState.WITHDRAWN):
        return Conflict(
            f"application {application.id} is {application.state}; it has no outputs yet"
        )
    return None


def widening_problem(application: Application, proposed: Scope) -> str:
    """How proposed reaches past what the committee approved; empty when it does not."""
    approved = application.approved_scope
    if approved is None:
        return ""
    wider = [
        f"{part} {sorted(set(getattr(proposed, part)) - set(getattr(approved, part)))}"
        for part in ("nodes", "datasets", "analyses")
        if set(getattr(proposed, part)) - set(getattr(approved, part))
    ]
    if proposed.end_date > approved.end_date:
        wider.append(f"an end date after {approved.end_date}")
    if not wider:
        return ""
    return (
        f"project {application.form.project_name!r} was approved by the data access committee "
        f"(application {application.id}); {'; '.join(wider)} lie outside it: a wider scope "
        "needs a new application (`fedtre apply`)"
    )


def narrow(requested: Scope, given: Narrowing | None, today: date) -> Scope:
    """The approved scope: given's parts (empty ones keep the request's), never wider.

    Raises InvalidRequest naming what lies outside the request.
    """
    if given is None:
        return requested
    scope = Scope(
        nodes=given.nodes or requested.nodes,
        datasets=given.datasets or requested.datasets,
        analyses=given.analyses or requested.analyses,
        end_date=given.end_date or requested.end_date,
    )
    for part in ("nodes", "datasets", "analyses"):
        wider = sorted(set(getattr(scope, part)) - set(getattr(requested, part)))
        if wider:
            raise InvalidRequest(
                f"the committee may narrow an application, never widen it: {part} {wider} "
                f"were not requested (requested: {list(getattr(requested, part))})"
            )
    if scope.end_date > requested.end_date:
        raise InvalidRequest(
            f"the approved end date {scope.end_date} is after the requested "
            f"{requested.end_date}; the committee may only shorten it"
        )
    if scope.end_date <= today:
        raise InvalidRequest("the approved end date must be in the future")
    return scope


def _intersection(scopes: Sequence[Scope]) -> Scope:
    """What every approver agreed to, in the first approver's order."""
    first = scopes[0]

    def common(part: str) -> tuple[str, ...]:
        return tuple(v for v in getattr(first, part) if all(v in getattr(s, part) for s in scopes))

    agreed = Scope(common("nodes"), common("datasets"), common("analyses"),
                   min(s.end_date for s in scopes))  # fmt: skip
    if not agreed.nodes or not agreed.datasets or not agreed.analyses:
        raise InvalidRequest(
            "the approvers' scopes have no node, dataset or analysis in common; approve "
            "with a scope that overlaps the others' (`fedtre applications show` lists them)"
        )
    return agreed


def _after(
    application: Application, decision: Decision, state: ApplicationState, now: datetime
) -> Application:
    return replace(
        application,
        state=state,
        decisions=(*application.decisions, decision),
        updated_at=now,
    )


def _names(values: Iterable[str], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    if len(names) > MAX_NAMES:
        raise InvalidRequest(f"name at most {MAX_NAMES} of {what}")
    for name in names:
        if not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"{what} {name!r} is not a valid name: letters, digits, '_', '.', '-'"
            )
    return names
