"""How a project's dates are said: when its approval lapsed, was withdrawn, or starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.domain import register
from coordinator.domain.governance import Project, not_started_problem, scope_problems
from fedtre.identity.peer import Identity

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
ANA = Identity(name="ana", role="researcher")


def project(expires: datetime, starts: datetime | None = None) -> Project:
    return Project(
        name="bp-outcomes", description="", members=("ana",), nodes=("tre-a",),
        datasets=("cohort",), analyses=("count",), approval_expires_at=expires,
        approvals_required=1, auto_approve=(), created_at=NOW - timedelta(days=90),
        created_by="admin", starts_at=starts,
    )  # fmt: skip


def problems(found: Project, *, withdrawn: bool = False) -> list[str]:
    found_problems = scope_problems(
        found, ANA, found.name, "count", "cohort", ("tre-a",), NOW, withdrawn=withdrawn
    )
    return [p.message for p in found_problems]


def test_a_lapsed_approval_names_the_project_once_and_says_when():
    lapsed = project(datetime(2027, 5, 31, 23, 59, 59, tzinfo=UTC))

    assert problems(lapsed) == [
        "project 'bp-outcomes': its data-access approval lapsed on 2027-05-31 23:59 UTC"
    ]


def test_a_withdrawn_approval_says_it_was_withdrawn():
    withdrawn = project(datetime(2027, 5, 3, 9, 30, tzinfo=UTC))

    assert problems(withdrawn, withdrawn=True) == [
        "project 'bp-outcomes': its data-access approval was withdrawn on 2027-05-03 09:30 UTC"
    ]


def test_a_project_before_its_start_says_when_it_starts():
    later = project(NOW + timedelta(days=200), starts=datetime(2027, 9, 1, tzinfo=UTC))

    assert not_started_problem(later, NOW) == (
        "project 'bp-outcomes': its data-access approval starts on 2027-09-01 00:00 UTC; "
        "submit its jobs from then"
    )
    assert not_started_problem(later, datetime(2027, 9, 1, tzinfo=UTC)) == ""
    assert not_started_problem(project(NOW + timedelta(days=1)), NOW) == ""  # no start set


def test_the_register_says_approved_not_started_before_the_start():
    from coordinator.domain.applications import ApplicationState

    class Approved:  # the fields status() reads of an approved application
        state = ApplicationState.APPROVED
        approved_scope = None

    state = register.ProjectState(
        "bp-outcomes", NOW + timedelta(days=200), starts_at=NOW + timedelta(days=30)
    )

    assert register.status(Approved(), state, NOW) == "approved, not started"  # type: ignore[arg-type]
    assert register.status(Approved(), state, NOW + timedelta(days=30)) == "active"  # type: ignore[arg-type]
