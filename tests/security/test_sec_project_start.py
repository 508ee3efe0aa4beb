"""A project's data-access approval starts on its approved start date, not before.

A committee approves an application for dates in the future: the project exists at once,
but no job is submitted (FAILED_PRECONDITION, saying when it starts) or dispatched until
then, agents refuse a grant of a project that has not started, and the Data Use Register
shows it as approved but not started. A project an admin creates without a start runs
from its creation, as before.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from sectools import OPEN_POLICY, agent_tasks, cli, code_of, data, start, token_channel

from coordinator.domain import register
from fedtre.errors import Conflict, InvalidRequest
from fedtre.testing import LocalNetwork
from fedtre.v1 import jobs_pb2, jobs_pb2_grpc

ORG = "Ashcombe Health Institute"
STARTS = date.today() + timedelta(days=30)
ENDS = date.today() + timedelta(days=300)


def form(project: str, starts: date) -> dict[str, object]:
    return {
        "applicants": ["ines-hartwell"],
        "organisation": ORG,
        "project_name": project,
        "title": f"Title of {project}",
        "lay_summary": "A lay summary.",
        "public_benefit": "A public benefit.",
        "technical_summary": "A technical summary.",
        "funders": ["A funder"],
        "start_date": starts.isoformat(),
        "end_date": ENDS.isoformat(),
        "article6": "6(1)(e)",
        "article9": "9(2)(h)",
        "duty_of_confidentiality": "Section 251 support",
        "national_data_opt_out": "Applied",
        "nodes": ["tre-a"],
        "datasets": ["cohort"],
        "analyses": ["count"],
        "linkage": "none",
        "expected_outputs": "papers",
    }


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a"),
            policy=OPEN_POLICY,
            auto_approve=False,
            ping_interval=0.3,
            metrics=True,
            directory=tmp_path_factory.mktemp("project-start"),
        )
    )
    network.add_user("ines-hartwell", "researcher", projects=())
    network.add_user("otto-fairweather", "approver", projects=())
    with network.client("admin") as admin:
        admin.applications.set_affiliation("ines-hartwell", ORG, sector="NHS", accredited=True)
    with network.client("ines-hartwell") as ines, network.client("otto-fairweather") as otto:
        later = ines.applications.apply(form("starts-later", STARTS)).id
        otto.applications.approve(later, "approved from the start date")
        now = ines.applications.apply(form("starts-today", date.today())).id
        otto.applications.approve(now, "approved")
    yield network
    network.stop()


def _register(net: LocalNetwork) -> dict[str, dict]:
    page = net.coordinator.applications.register()
    return {e["project_id"]: e for e in page}


def test_an_approved_project_starts_on_its_approved_start_date(net):
    project = net.coordinator.admin.governance.project("starts-later")

    assert project.starts_at == datetime(STARTS.year, STARTS.month, STARTS.day, tzinfo=UTC)
    with net.client("admin") as admin:
        assert admin.admin.project("starts-later").starts_at == project.starts_at


def test_a_job_before_the_start_is_refused_as_a_failed_precondition_saying_when(net):
    with net.client("ines-hartwell") as ines:
        with pytest.raises(Conflict) as refused:
            ines.submit("count", dataset="cohort", project="starts-later")
        dry = ines.submit("count", dataset="cohort", project="starts-later", dry_run=True)

    message = str(refused.value)
    assert "'starts-later': its data-access approval starts on " + STARTS.isoformat() in message
    assert not net.coordinator.store.list_jobs(None, 10, project="starts-later")  # none queued
    assert not dry.ok and STARTS.isoformat() in dry.problems[0][1]


def test_the_refusal_is_failed_precondition_on_the_wire(net):
    stub = jobs_pb2_grpc.JobServiceStub(token_channel(net, net.tokens["ines-hartwell"]))
    request = jobs_pb2.SubmitJobRequest(
        spec=jobs_pb2.JobSpec(analysis="count", dataset="cohort", project="starts-later")
    )

    assert code_of(stub.SubmitJob, request) is grpc.StatusCode.FAILED_PRECONDITION


def test_a_started_project_runs_its_jobs(net):
    with net.client("ines-hartwell") as ines, net.client("otto-fairweather") as otto:
        job = ines.submit("count", dataset="cohort", project="starts-today")
        otto.approve(job.id)
        result = job.result(timeout=30)

    assert result.state == "completed"


def test_the_register_says_approved_not_started_until_the_start(net):
    listed = _register(net)
    assert listed["starts-later"]["status"] == register.NOT_STARTED
    assert listed["starts-today"]["status"] == "active"

    applications = net.coordinator.applications
    real_clock = applications.clock
    applications.clock = lambda: real_clock() + timedelta(days=31)
    try:
        assert _register(net)["starts-later"]["status"] == "active"
    finally:
        applications.clock = real_clock


def test_the_start_may_not_move_before_the_approved_start(net):
    with net.client("admin") as admin, pytest.raises(Conflict, match="may not start earlier"):
        admin.admin.update_project("starts-later", starts=date.today())


def test_an_admin_sets_a_start_with_the_cli_and_it_must_precede_the_expiry(net, capsys):
    admin = ["--coordinator", net.api_address, "--identity", str(net.identity("admin"))]
    code, out, err = cli(
        capsys, "projects", "create", "admin-later", "--expires", ENDS.isoformat(),
        "--starts", STARTS.isoformat(), "--nodes", "tre-a", "--datasets", "cohort",
        "--analyses", "count", "--members", "ines-hartwell", "--json", *admin,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["starts_at"].startswith(STARTS.isoformat())
    code, out, err = cli(capsys, "projects", "show", "admin-later", *admin)
    assert f"from {STARTS.isoformat()}" in out and "(NOT STARTED)" in out
    with net.client("admin") as admin, pytest.raises(InvalidRequest, match="before --expires"):
        admin.admin.update_project("admin-later", starts=ENDS + timedelta(days=1))


def test_an_admin_project_without_a_start_runs_at_once(net):
    with net.client("admin") as admin:
        admin.admin.create_project(
            "admin-now", expires=ENDS, nodes=["tre-a"], datasets=["cohort"],
            analyses=["count"], members=["ines-hartwell"], auto_approve=["count"],
        )  # fmt: skip
    with net.client("ines-hartwell") as ines:
        result = ines.submit("count", dataset="cohort", project="admin-now").result(timeout=30)

    assert net.coordinator.admin.governance.project("admin-now").starts_at is None
    assert result.state == "completed"


def test_a_queued_task_is_not_dispatched_once_its_projects_start_moves_later(net):
    # Given an approved job of an admin's project whose task waits (tre-a's agent is down),
    with net.client("admin") as admin:
        admin.admin.create_project(
            "moved-start", expires=ENDS, nodes=["tre-a"], datasets=["cohort"],
            analyses=["count"], members=["ines-hartwell"], auto_approve=["count"],
        )  # fmt: skip
    net.stop_agent("tre-a")
    try:
        with net.client("ines-hartwell") as ines:
            handle = ines.submit("count", dataset="cohort", project="moved-start")
        task = net.coordinator.store.get_job(handle.id).tasks[0].task_id
        # when an admin moves the project's start to next month,
        with net.client("admin") as admin:
            admin.admin.update_project("moved-start", starts=STARTS)
    finally:
        net.start_agent("tre-a", net.data["tre-a"])

    # then the coordinator withholds the task when tre-a comes back: refused, never sent.
    with net.client("ines-hartwell") as ines:
        result = ines.handle(handle.id).result(30)
    assert result.nodes["tre-a"].outcome == "refused"
    assert f"starts on {STARTS.isoformat()}" in result.nodes["tre-a"].error
    assert task not in agent_tasks(net, "tre-a")
