"""Applications in the coordinator's database, on SQLite and PostgreSQL, through the use cases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from coordinator.admin import Admin
from coordinator.applications import Applications
from coordinator.domain.applications import (
    ApplicationForm,
    ApplicationState,
    Narrowing,
    Verdict,
    decide,
)
from fedtre.errors import Conflict, NotFound
from fedtre.identity.peer import Identity

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
ADMIN = Identity("root", "admin")
ALICE = Identity("alice", "researcher")
BOB = Identity("bob", "approver")
CAROL = Identity("carol", "approver")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def apps(store, clock) -> Applications:
    admin = Admin(store, clock)
    for name, role in (("root", "admin"), ("alice", "researcher"), ("bob", "approver"),
                       ("carol", "approver")):  # fmt: skip
        admin.create_user(ADMIN, name, role)
    applications = Applications(store, admin, clock, approvals_required=2)
    applications.set_affiliation(ADMIN, "alice", "Uni", "Academia", True)
    return applications


def form(project: str = "heart") -> ApplicationForm:
    return ApplicationForm(
        applicants=("alice",), organisation="Uni", project_name=project, title="Heart study",
        lay_summary="Hearts.", public_benefit="Care.", technical_summary="Counts.",
        funders=("NIHR",), start_date=date(2027, 1, 1), end_date=date(2027, 12, 31),
        article6="6(1)(e)", article9="9(2)(j)", duty_of_confidentiality="s251",
        national_data_opt_out="applied", nodes=("tre-a", "tre-b"), datasets=("cohort",),
        analyses=("count",), linkage="none", expected_outputs="a paper",
    )  # fmt: skip


def test_approval_stores_the_decisions_and_creates_the_project_in_one_go(apps, store):
    submitted = apps.submit(ALICE, form())
    apps.decide(BOB, submitted.id, "approve", "", Narrowing(nodes=("tre-a",)))
    approved = apps.decide(CAROL, submitted.id, "approve", "ok")

    assert approved.state is ApplicationState.APPROVED
    assert [d.approver for d in approved.decisions] == ["bob", "carol"]
    project = store.governance.project("heart")
    assert project is not None and project.nodes == ("tre-a",)
    assert project.approval_expires_at == datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert apps.for_project(Identity("tre-a", "node"), "heart").id == submitted.id
    # A node the committee left out learns nothing of it.
    with pytest.raises(NotFound):
        apps.for_project(Identity("tre-b", "node"), "heart")
    events = [e.event for e in store.governance.audit_entries()]
    assert events.count("application.approved") == 2 and "project.created" in events
    assert store.governance.verify_audit().ok


def test_a_decision_on_a_stale_read_is_refused(apps):
    submitted = apps.submit(ALICE, form())
    stale = apps.store.application(submitted.id)
    apps.decide(BOB, submitted.id, "return", "more detail")
    assert stale is not None

    outcome = decide(stale, CAROL, Verdict.REJECT, "no", None, NOW)
    with pytest.raises(Conflict, match="meanwhile"):
        apps.store.record_decision(stale, outcome, None, apps.governance, NOW)
    assert apps.store.application(submitted.id).state is ApplicationState.RETURNED


def test_a_project_name_is_held_by_one_application(apps):
    apps.submit(ALICE, form())
    with pytest.raises(Conflict, match="already asks for a project 'heart'"):
        apps.submit(ALICE, form())


def test_withdrawal_lapses_the_project_and_the_register_keeps_it(apps, store, clock):
    submitted = apps.submit(ALICE, form())
    apps.decide(BOB, submitted.id, "approve")
    apps.decide(CAROL, submitted.id, "approve")
    clock.now = NOW + timedelta(days=30)

    apps.decide(ALICE, submitted.id, "withdraw", "funding ended")

    project = store.governance.project("heart")
    assert project is not None and project.lapsed(clock.now)
    (entry,) = apps.register()
    assert entry["status"] == "withdrawn" and entry["project_id"] == "heart"
