"""The data access committee's rules and the register's entries, without a network."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from coordinator.domain import register
from coordinator.domain.applications import (
    Application,
    ApplicationForm,
    ApplicationState,
    Narrowing,
    Verdict,
    checked_form,
    decide,
    edit_problem,
)
from fedtre.errors import Conflict, InvalidRequest, PermissionDenied
from fedtre.identity.peer import Identity

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
ALICE = Identity("alice", "researcher")
BOB = Identity("bob", "approver")
CAROL = Identity("carol", "approver")


def form(**changes: object) -> ApplicationForm:
    values: dict[str, object] = dict(
        applicants=("alice",), organisation="Uni", project_name="heart",
        title="Heart study", lay_summary="Hearts.", public_benefit="Care.",
        technical_summary="Counts by age.", funders=("NIHR",),
        start_date=date(2027, 1, 1), end_date=date(2027, 12, 31),
        article6="6(1)(e)", article9="9(2)(j)", duty_of_confidentiality="s251",
        national_data_opt_out="applied", nodes=("tre-a", "tre-b"), datasets=("cohort",),
        analyses=("count", "crosstab"), linkage="none", expected_outputs="a paper",
    )  # fmt: skip
    values.update(changes)
    return ApplicationForm(**values)  # type: ignore[arg-type]


def application(approvals_required: int = 1, **changes: object) -> Application:
    return Application(
        id=7,
        state=ApplicationState.SUBMITTED,
        form=form(**changes),
        submitted_by="alice",
        version=1,
        submitted_at=NOW,
        updated_at=NOW,
        approvals_required=approvals_required,
    )


def test_the_submitter_is_always_an_applicant_and_names_are_trimmed():
    checked = checked_form(
        form(applicants=(" dan ",), nodes=("tre-a", " tre-a")), "alice", NOW.date()
    )
    assert checked.applicants == ("alice", "dan")
    assert checked.nodes == ("tre-a",)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"title": "  "}, "title"),
        ({"article6": "consent"}, "Article 6"),
        ({"article9": "9(2)(z)"}, "Article 9"),
        ({"end_date": date(2026, 12, 1)}, "before start_date"),
        ({"start_date": date(2026, 1, 1), "end_date": date(2026, 6, 1)}, "has passed"),
        ({"nodes": ()}, "names the nodes"),
        ({"project_name": "Heart Study"}, "project_name"),
        ({"datasets": ("co;hort",)}, "not a valid name"),
    ],
)
def test_a_bad_form_is_refused_saying_which_field(changes, says):
    with pytest.raises(InvalidRequest, match=says):
        checked_form(form(**changes), "alice", NOW.date())


def test_an_applicant_never_decides_their_own_application():
    with pytest.raises(PermissionDenied, match="nobody decides their own"):
        decide(application(applicants=("alice", "bob")), BOB, Verdict.APPROVE, "", None, NOW)


def test_a_researcher_is_not_on_the_committee():
    with pytest.raises(PermissionDenied, match="committee"):
        decide(application(), Identity("dan", "researcher"), Verdict.APPROVE, "", None, NOW)


def test_n_different_approvers_approve_and_the_agreed_scope_is_their_intersection():
    first = decide(
        application(2), BOB, Verdict.APPROVE, "", Narrowing(nodes=("tre-a", "tre-b")), NOW
    )
    assert first.application.state is ApplicationState.SUBMITTED and first.approved is None
    with pytest.raises(Conflict, match="already approved"):
        decide(first.application, BOB, Verdict.APPROVE, "", None, NOW)

    second = decide(
        first.application, CAROL, Verdict.APPROVE, "ok",
        Narrowing(nodes=("tre-a",), end_date=date(2027, 6, 30)), NOW,
    )  # fmt: skip

    assert second.application.state is ApplicationState.APPROVED
    assert second.approved is not None
    assert second.approved.nodes == ("tre-a",)
    assert second.approved.analyses == ("count", "crosstab")
    assert second.approved.end_date == date(2027, 6, 30)
    assert second.approved.expires_at() == datetime(2027, 6, 30, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "wider",
    [
        Narrowing(nodes=("tre-a", "tre-z")),
        Narrowing(analyses=("linear_regression",)),
        Narrowing(end_date=date(2028, 1, 1)),
    ],
)
def test_the_committee_narrows_but_never_widens(wider):
    with pytest.raises(InvalidRequest, match="widen|only shorten"):
        decide(application(), BOB, Verdict.APPROVE, "", wider, NOW)


def test_reject_and_return_need_a_comment():
    for verdict in (Verdict.REJECT, Verdict.RETURN):
        with pytest.raises(InvalidRequest, match="say why"):
            decide(application(), BOB, verdict, " ", None, NOW)


def test_a_returned_application_may_be_edited_by_an_applicant_only():
    returned = decide(application(), BOB, Verdict.RETURN, "name the funder", None, NOW)
    assert returned.application.state is ApplicationState.RETURNED
    assert edit_problem(ALICE, returned.application) is None
    assert isinstance(edit_problem(CAROL, returned.application), PermissionDenied)


def test_an_approved_or_pending_application_is_not_edited():
    approved = decide(application(), BOB, Verdict.APPROVE, "", None, NOW).application
    assert isinstance(edit_problem(ALICE, approved), Conflict)
    assert isinstance(edit_problem(ALICE, application()), Conflict)


def test_only_an_approved_application_is_withdrawn():
    with pytest.raises(Conflict, match="only an approved"):
        decide(application(), BOB, Verdict.WITHDRAW, "ended", None, NOW)
    approved = decide(application(), BOB, Verdict.APPROVE, "", None, NOW).application
    withdrawn = decide(approved, ALICE, Verdict.WITHDRAW, "funding ended", None, NOW)
    assert withdrawn.withdrawn and withdrawn.application.state is ApplicationState.WITHDRAWN


def _approved() -> Application:
    return decide(application(), BOB, Verdict.APPROVE, "", None, NOW).application


def test_register_status_active_expired_and_withdrawn():
    approved = _approved()
    scope = approved.approved_scope
    assert scope is not None
    project = register.ProjectState("heart", scope.expires_at())

    assert register.status(approved, project, NOW) == "active"
    assert register.status(approved, project, scope.expires_at() + timedelta(seconds=1)) == (
        "expired"
    )
    cut_short = register.ProjectState("heart", NOW - timedelta(days=1))
    assert register.status(approved, cut_short, NOW) == "withdrawn"
    withdrawn = replace(approved, state=ApplicationState.WITHDRAWN)
    assert register.status(withdrawn, project, NOW) == "withdrawn"


def test_a_register_cell_is_never_a_spreadsheet_formula():
    approved = _approved()
    hostile = replace(approved, form=replace(approved.form, title='=HYPERLINK("x")'))
    rows = register.entries([hostile], {}, NOW)

    parsed = list(csv.reader(io.StringIO(register.to_csv(rows).decode())))

    assert parsed[0] == list(register.FIELDS)
    assert parsed[1][1] == '\'=HYPERLINK("x")'


def test_only_approved_applications_are_on_the_register():
    pending = application()
    rejected = decide(application(), BOB, Verdict.REJECT, "no", None, NOW).application
    assert register.entries([pending, rejected], {}, NOW) == []
    assert [e["project_id"] for e in register.entries([_approved()], {}, NOW)] == ["heart"]
