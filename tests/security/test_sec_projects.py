"""Safe projects: a job stays inside its project, needs its approvals, and lapses with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sectools import (
    OPEN_POLICY,
    TIMEOUT,
    agent_tasks,
    audit_since,
    cli,
    code_of,
    data,
    events,
    frame,
    head,
    start,
    token_channel,
    wait_for,
)

from fedtre.errors import NotFound, PermissionDenied
from fedtre.testing import LocalNetwork
from fedtre.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from fedtre.wire import dict_to_struct

WAIT = 20


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    nodes = data("tre-a", "tre-b", "tre-c")
    nodes["tre-a"]["registry"] = frame(seed=9)
    network = start(
        LocalNetwork(
            nodes,
            policy=OPEN_POLICY,
            auto_approve=False,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("projects"),
        )
    )
    network.add_user("outsider", "researcher", projects=())
    network.add_user("approver2", "approver", projects=())
    # An approver who is also a researcher on "alpha": may submit, never approve their own.
    network.add_user("pi", "approver", projects=())
    network.add_project(
        "alpha",
        members=("researcher", "pi"),
        nodes=("tre-a", "tre-b"),
        datasets=("cohort",),
        analyses=("count",),
        approvals_required=2,
        auto_approve=(),
    )
    network.add_project(
        "quick", nodes=("tre-a",), datasets=("cohort",), analyses=("count", "crosstab"),
        approvals_required=1, auto_approve=("count",),
    )  # fmt: skip
    network.add_project(
        "secret", members=("outsider",), nodes=("tre-a",), datasets=("cohort",),
        analyses=("count",), auto_approve=("count",),
    )  # fmt: skip
    yield network
    network.stop()


def spec(
    analysis: str = "count",
    *,
    project: str = "alpha",
    dataset: str = "cohort",
    nodes: tuple[str, ...] = (),
    params: dict | None = None,
) -> jobs_pb2.SubmitJobRequest:
    return jobs_pb2.SubmitJobRequest(
        spec=jobs_pb2.JobSpec(
            analysis=analysis,
            dataset=dataset,
            params=dict_to_struct(params or {}),
            nodes=list(nodes),
            project=project,
        )
    )


def job_ids(net: LocalNetwork) -> set[int]:
    return {j.id for j in net.coordinator.store.list_jobs(None, 1000)}


# -- scope ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "request_", "problem"),
    [
        ("researcher", spec(nodes=("tre-c",)), "may not use node 'tre-c'"),
        ("researcher", spec(dataset="registry", nodes=("tre-a",)), "does not allow dataset"),
        ("researcher", spec("crosstab", params={"rows": "sex"}), "does not allow analysis"),
        ("outsider", spec(), "not a member of a project 'alpha'"),
        ("outsider", spec(nodes=("nowhere",)), "not a member of a project 'alpha'"),
        ("outsider", spec(project="no-such"), "not a member of a project 'no-such'"),
    ],
    ids=[
        "node-outside",
        "dataset-outside",
        "analysis-not-allowed",
        "outsider",
        "outsider-bad-node",
        "no-such-project",
    ],
)
def test_a_job_outside_its_project_is_refused_and_nothing_is_written(net, who, request_, problem):
    before, jobs = head(net), job_ids(net)
    with token_channel(net, net.tokens[who]) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(request_, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert problem in err.value.details()
    refused = events(net, before, "job.refused")
    assert len(refused) == 1 and refused[0].actor == who
    assert any(problem in p for p in refused[0].details["problems"])
    assert job_ids(net) == jobs
    assert not events(net, before, "job.submitted")
    if who == "outsider":  # one problem, and nothing of the project's scope shown
        assert err.value.details().count("\n- ") == 1
        assert "tre-" not in err.value.details() and "cohort" not in err.value.details()


def test_a_researcher_cannot_read_another_projects_results(net):
    # Given a finished job of project "secret", which researcher does not belong to,
    with net.client("outsider") as outsider:
        theirs = outsider.submit("count", dataset="cohort", project="secret").result(WAIT)
        job_id = max(job_ids(net))
    assert theirs.state == "completed"
    before = head(net)
    with net.client("researcher") as researcher:
        # when the researcher asks for it, lists jobs, or asks for the project,
        with pytest.raises(NotFound) as found:
            researcher.job(job_id)
        with pytest.raises(NotFound) as missing:
            researcher.job(999_999)
        listed = researcher.jobs(limit=1000)
        by_project = researcher.jobs(project="secret")
    with token_channel(net, net.tokens["researcher"]) as channel:
        get_project = admin_pb2_grpc.AdminServiceStub(channel).GetProject
        assert code_of(get_project, admin_pb2.GetProjectRequest(name="secret")) == (
            grpc.StatusCode.NOT_FOUND
        )
        get_job = jobs_pb2_grpc.JobServiceStub(channel).GetJob
        assert code_of(get_job, jobs_pb2.GetJobRequest(job_id=job_id)) == grpc.StatusCode.NOT_FOUND
    # then the job is NOT_FOUND exactly as a missing one is (the id reveals nothing),
    assert str(found.value).replace(str(job_id), "N") == str(missing.value).replace("999999", "N")
    assert job_id not in {j.id for j in listed} and by_project == []
    # the attempt is audited, and no result was read.
    denied = events(net, before, "access.denied")
    assert [(e.actor, e.subject) for e in denied] == [("researcher", f"job:{job_id}")] * 2
    assert not events(net, before, "result.read")


# -- approval policy -----------------------------------------------------------------------


def test_a_researcher_cannot_approve_their_own_job(net):
    with net.client("researcher") as researcher:
        handle = researcher.submit("count", dataset="cohort", project="alpha")
        before = head(net)
        with pytest.raises(PermissionDenied):
            researcher.approve(handle.id)
        assert researcher.job(handle.id).state == "pending_approval"
    denied = events(net, before, "access.denied")
    assert [(e.actor, e.details["method"]) for e in denied] == [("researcher", "ApproveJob")]
    assert not events(net, before, "job.approval_recorded")
    assert net.coordinator.store.get_job(handle.id).tasks == ()


def test_an_approver_cannot_approve_a_job_they_submitted(net):
    with net.client("pi") as pi:
        handle = pi.submit("count", dataset="cohort", project="alpha")
        before = head(net)
        with pytest.raises(PermissionDenied, match="nobody approves their own job"):
            pi.approve(handle.id)
        status = pi.job(handle.id)
    assert status.state == "pending_approval" and status.approved_by == ()
    refused = events(net, before, "approval.refused")
    assert [(e.actor, e.subject) for e in refused] == [("pi", f"job:{handle.id}")]
    assert not events(net, before, "job.approval_recorded")


def test_two_different_approvers_are_needed_and_one_approver_counts_once(net):
    with net.client("researcher") as researcher:
        handle = researcher.submit("count", dataset="cohort", project="alpha")
    with net.client("approver") as approver:
        # One approval of two: nothing is dispatched yet.
        first = approver.approve(handle.id)
        assert first.state == "pending_approval" and first.approved_by == ("approver",)
        assert first.approvals_required == 2
        assert net.coordinator.store.get_job(handle.id).tasks == ()
        # The same approver again does not count twice.
        before = head(net)
        with pytest.raises(PermissionDenied, match="already approved"):
            approver.approve(handle.id)
        assert approver.job(handle.id).state == "pending_approval"
        assert len(events(net, before, "approval.refused")) == 1
    assert net.coordinator.store.get_job(handle.id).tasks == ()
    # A second, different approver releases it, and it runs.
    with net.client("approver2") as second:
        released = second.approve(handle.id)
        assert set(released.approved_by) == {"approver", "approver2"}
        result = second.handle(handle.id).result(WAIT)
    assert result.state == "completed"
    assert set(result.nodes) == {"tre-a", "tre-b"}


def test_automatic_approval_covers_only_the_listed_analyses(net):
    with net.client("researcher") as researcher:
        listed = researcher.submit("count", dataset="cohort", project="quick")
        unlisted = researcher.submit(
            "crosstab", dataset="cohort", project="quick", params={"rows": "sex"}
        )
        assert listed.result(WAIT).state == "completed"
        assert researcher.job(listed.id).decided_by == "auto-approval"
        held = researcher.job(unlisted.id)
    assert held.state == "pending_approval" and held.approved_by == ()
    assert net.coordinator.store.get_job(unlisted.id).tasks == ()


# -- lapsed approval -----------------------------------------------------------------------


def test_a_lapsed_projects_queued_tasks_are_not_dispatched_and_nothing_more_is_accepted(net):
    net.add_project(
        "lapsing", nodes=("tre-a", "tre-b"), datasets=("cohort",), analyses=("count",),
        auto_approve=(),
    )  # fmt: skip
    # Given an approved job whose tre-b task waits in the queue (tre-b's agent is down),
    net.stop_agent("tre-b")
    try:
        with net.client("researcher") as researcher:
            handle = researcher.submit("count", dataset="cohort", project="lapsing")
            pending = researcher.submit("count", dataset="cohort", project="lapsing")
        with net.client("approver") as approver:
            approver.approve(handle.id)
        tasks = {t.node: t for t in net.coordinator.store.get_job(handle.id).tasks}
        task_b = tasks["tre-b"].task_id
        wait_for(lambda: tasks["tre-a"].task_id in agent_tasks(net, "tre-a"), what="tre-a's run")
        with net.client("researcher") as researcher:
            wait_for(
                lambda: researcher.job(handle.id).tasks["tre-a"].outcome == "released",
                what="tre-a's report",
            )
        # when the project's data-access approval lapses,
        with net.client("admin") as admin:
            admin.admin.update_project("lapsing", expires=datetime.now(UTC) - timedelta(days=1))
        before = head(net)
        # then no new job is accepted and no pending job can be approved,
        with net.client("researcher") as researcher:
            with pytest.raises(PermissionDenied, match="lapsed"):
                researcher.submit("count", dataset="cohort", project="lapsing")
        with net.client("approver") as approver:
            with pytest.raises(PermissionDenied, match="lapsed"):
                approver.approve(pending.id)
    finally:
        net.start_agent("tre-b", net.data["tre-b"])
    # and the queued task is withheld when tre-b comes back: refused, audited, never sent.
    with net.client("researcher") as researcher:
        result = researcher.handle(handle.id).result(WAIT)
    assert result.state == "partial"
    assert result.nodes["tre-b"].outcome == "refused"
    assert "lapsed" in result.nodes["tre-b"].error
    assert result.nodes["tre-a"].outcome == "released"
    withheld = events(net, before, "task.withheld")
    assert [e.subject for e in withheld] == [f"task:{task_b}"]
    assert len(events(net, before, "job.refused")) == 1
    assert len(events(net, before, "approval.refused")) == 1
    assert task_b not in agent_tasks(net, "tre-b")


def test_only_the_submitter_or_an_approver_may_cancel_a_job(net):
    net.add_user("colleague", "researcher", projects=("alpha",))
    with net.client("researcher") as researcher:
        handle = researcher.submit("count", dataset="cohort", project="alpha")
    before = head(net)
    # A fellow member may see the job, but not cancel it;
    with token_channel(net, net.tokens["colleague"]) as channel:
        cancel = jobs_pb2_grpc.JobServiceStub(channel).CancelJob
        request = jobs_pb2.CancelJobRequest(job_id=handle.id, reason="mine now")
        assert code_of(cancel, request) == grpc.StatusCode.PERMISSION_DENIED
    # someone outside the project cannot even tell it exists.
    with token_channel(net, net.tokens["outsider"]) as channel:
        cancel = jobs_pb2_grpc.JobServiceStub(channel).CancelJob
        request = jobs_pb2.CancelJobRequest(job_id=handle.id, reason="gone")
        assert code_of(cancel, request) == grpc.StatusCode.NOT_FOUND
    denied = events(net, before, "access.denied")
    assert [(e.actor, e.subject) for e in denied] == [
        ("colleague", f"job:{handle.id}"),
        ("outsider", f"job:{handle.id}"),
    ]
    assert net.coordinator.store.get_job(handle.id).state.value == "pending_approval"


def test_project_changes_through_the_cli_are_checked_stored_clean_and_audited(net, capsys):
    admin = ["--coordinator", net.api_address, "--identity", str(net.identity("admin"))]
    net.add_project("tidy", nodes=("tre-a",), datasets=("cohort",), analyses=("count",))
    before = head(net)
    code, out, err = cli(
        capsys, "projects", "update", "tidy", "--nodes", "tre-b, tre-a,tre-b", "--json", *admin
    )
    assert code == 0, err
    assert json.loads(out)["nodes"] == ["tre-b", "tre-a"]
    assert net.coordinator.store.governance.project("tidy").nodes == ("tre-b", "tre-a")
    # An auto-approved analysis the project does not allow is refused, and nothing changes.
    code, _, err = cli(capsys, "projects", "update", "tidy", "--auto-approve", "crosstab", *admin)
    assert code == 2 and "not among the project's" in err
    assert net.coordinator.store.governance.project("tidy").auto_approve == ()
    assert cli(capsys, "projects", "add-member", "tidy", "outsider", *admin)[0] == 0
    assert cli(capsys, "projects", "remove-member", "tidy", "outsider", *admin)[0] == 0
    changes = [e.event for e in audit_since(net, before) if e.subject == "project:tidy"]
    assert changes == ["project.updated", "project.member_added", "project.member_removed"]
