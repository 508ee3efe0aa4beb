"""Safe projects from Data Access Requests: the committee's rules hold, through the API.

One network, a committee of two approvers (committee_approvals=2). People:

- ada-quill and ben-marsh, researchers of "Northgate University" (ada accredited);
- eve-outside, a researcher of "Southgate Ltd"; mo-unlisted, a researcher of no recorded
  organisation;
- cy-approver and di-approver, approvers; pi-approver, an approver of Northgate who
  also applies.

tre-b's operator approves each new project (operator_approval = "project").
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from sectools import (
    OPEN_POLICY,
    agent_tasks,
    audit_since,
    cli,
    code_of,
    data,
    events,
    head,
    start,
    token_channel,
    wait_for,
)

from fedtre.errors import Conflict, NotFound, PermissionDenied
from fedtre.testing import LocalNetwork
from fedtre.v1 import admin_pb2, admin_pb2_grpc, applications_pb2_grpc
from fedtre.v1 import applications_pb2 as pb

ORG = "Northgate University"
END = date.today() + timedelta(days=300)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a", "tre-b"),
            policy=OPEN_POLICY,
            auto_approve=False,
            ping_interval=0.3,
            metrics=True,
            committee_approvals=2,
            directory=tmp_path_factory.mktemp("applications"),
            governance={"tre-b": {"operator_approval": "project"}},
        )
    )
    for name, role in (
        ("ada-quill", "researcher"), ("ben-marsh", "researcher"), ("eve-outside", "researcher"),
        ("mo-unlisted", "researcher"), ("cy-approver", "approver"), ("di-approver", "approver"),
        ("pi-approver", "approver"),
    ):  # fmt: skip
        network.add_user(name, role, projects=())
    with network.client("admin") as admin:
        apps = admin.applications
        apps.set_affiliation("ada-quill", ORG, sector="Academia", accredited=True)
        apps.set_affiliation("ben-marsh", ORG, sector="Academia")
        apps.set_affiliation("pi-approver", ORG, sector="Academia")
        apps.set_affiliation("eve-outside", "Southgate Ltd", sector="Industry")
    yield network
    network.stop()


def form(project: str, **changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "applicants": ["ada-quill", "ben-marsh"],
        "organisation": ORG,
        "project_name": project,
        "title": f"Cardiac outcomes ({project})",
        "lay_summary": "How often heart disease follows high blood pressure.",
        "public_benefit": "Earlier treatment for people at risk.",
        "technical_summary": "Counts and cross-tabulations by age band.",
        "funders": ["British Heart Foundation"],
        "start_date": date.today().isoformat(),
        "end_date": END.isoformat(),
        "article6": "6(1)(e)",
        "article9": "9(2)(j)",
        "duty_of_confidentiality": "Section 251 support",
        "national_data_opt_out": "Applied by each TRE",
        "nodes": ["tre-a", "tre-b"],
        "datasets": ["cohort"],
        "analyses": ["count", "crosstab"],
        "linkage": "none",
        "expected_outputs": "A peer-reviewed paper",
    }
    values.update(changes)
    return values


def apply(net: LocalNetwork, project: str, who: str = "ada-quill", **changes: object):
    with net.client(who) as client:
        return client.applications.apply(form(project, **changes))


def approve(net: LocalNetwork, app_id: int, who: str, **narrow: object):
    with net.client(who) as client:
        return client.applications.approve(app_id, "COMMITTEE-NOTE", **narrow)


def stub(net: LocalNetwork, who: str) -> applications_pb2_grpc.ApplicationServiceStub:
    return applications_pb2_grpc.ApplicationServiceStub(token_channel(net, net.tokens[who]))


def refusals(net: LocalNetwork, since: int, actor: str) -> list:
    return [e for e in events(net, since, "application.refused") if e.actor == actor]


# -- the journey --------------------------------------------------------------------------


def test_approval_by_the_committee_creates_the_narrowed_project(net):
    # Given an application for two TREs, submitted by ada with ben,
    mark = head(net)
    submitted = apply(net, "cardio")
    assert submitted.state == "submitted"
    assert dict(submitted.applicants) == {"ada-quill": True, "ben-marsh": False}
    assert submitted.sector == "Academia"

    # when one approver approves, no project exists yet;
    first = approve(net, submitted.id, "cy-approver", nodes=["tre-a"])
    assert first.state == "submitted"
    assert net.coordinator.admin.governance.project("cardio") is None

    # when the second approves with an earlier end, the project is created with the
    # scope both agreed to and expires at the end of the approved day.
    end = END - timedelta(days=30)
    done = approve(net, submitted.id, "di-approver", end_date=end)
    assert done.state == "approved"
    project = net.coordinator.admin.governance.project("cardio")
    assert project.nodes == ("tre-a",)
    assert project.datasets == ("cohort",)
    assert project.analyses == ("count", "crosstab")
    assert project.members == ("ada-quill", "ben-marsh")
    assert project.approval_expires_at == datetime(end.year, end.month, end.day, 23, 59, 59,
                                                   tzinfo=UTC)  # fmt: skip
    kinds = [e.event for e in audit_since(net, mark)]
    for event in ("application.submitted", "application.approved", "project.created"):
        assert event in kinds
    assert kinds.index("project.created") > kinds.index("application.approved")


def test_the_project_serves_only_the_approved_scope(net):
    application = apply(net, "cardio-jobs")
    approve(net, application.id, "cy-approver", nodes=["tre-a"])
    approve(net, application.id, "di-approver")

    with net.client("ada-quill") as client, net.client("approver") as approver:
        # a node the committee left out is refused,
        with pytest.raises(PermissionDenied, match="may not use node 'tre-b'"):
            client.submit("count", dataset="cohort", project="cardio-jobs", nodes=["tre-b"])
        # and the approved one runs once a job approver approves the job.
        job = client.submit("count", dataset="cohort", project="cardio-jobs", nodes=["tre-a"])
        approver.approve(job.id)
        result = job.result(timeout=30)
    assert result.state == "completed"
    assert result.combined["n"] > 0


def test_a_returned_application_is_edited_and_submitted_again(net):
    application = apply(net, "cardio-returned")
    approve(net, application.id, "cy-approver")  # an approval of version 1

    with net.client("di-approver") as client:
        returned = client.applications.return_for_changes(application.id, "Name your funder.")
    assert returned.state == "returned"
    with net.client("ben-marsh") as client:  # any applicant may edit it
        again = client.applications.resubmit(
            application.id, form("cardio-returned", funders=["NIHR"])
        )

    assert again.state == "submitted" and again.version == 2
    assert again.form["funders"] == ["NIHR"]
    # Version 1's approval does not count: two approvals of version 2 are needed.
    assert approve(net, application.id, "cy-approver").state == "submitted"
    assert approve(net, application.id, "di-approver").state == "approved"


def test_a_rejected_application_creates_nothing_and_stays_rejected(net):
    application = apply(net, "cardio-rejected")
    with net.client("cy-approver") as client:
        rejected = client.applications.reject(application.id, "No public benefit shown.")
    assert rejected.state == "rejected"
    code = code_of(
        stub(net, "di-approver").DecideApplication,
        pb.DecideApplicationRequest(id=application.id, decision="approve"),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert net.coordinator.admin.governance.project("cardio-rejected") is None


def test_the_tre_operator_reads_the_application_before_the_agent_serves_the_project(net, capsys):
    # Given a project approved by the committee for tre-b, whose operator approves projects,
    application = apply(net, "cardio-tre-b")
    approve(net, application.id, "cy-approver", nodes=["tre-b"])
    approve(net, application.id, "di-approver")
    agent = net.agents["tre-b"]
    config = str(net.directory / "nodes" / "tre-b" / "agent.toml")

    # when ada's first job reaches tre-b, it waits for the operator,
    with net.client("ada-quill") as client, net.client("approver") as approver:
        job = client.submit("count", dataset="cohort", project="cardio-tre-b", nodes=["tre-b"])
        approver.approve(job.id)
        wait_for(lambda: client.job(job.id).tasks["tre-b"].outcome == "held", what="held")

        def request():
            found = [r for r in agent.approvals.requests() if r.project == "cardio-tre-b"]
            return found[0] if found and found[0].application_fetched else None

        wait_for(request, what="the application kept with the operator's request")
        # and the operator's inbox shows the committee's approved application,
        code, out, err = cli(capsys, "agent", "inbox", "show", request().request_id,
                             "--config", config)  # fmt: skip
        assert code == 0, err
        for shown in (
            f"application {application.id}",
            "Cardiac outcomes (cardio-tre-b)",
            "How often heart disease follows high blood pressure.",
            "ada-quill (accredited), ben-marsh of Northgate University",
            "approved    nodes tre-b; datasets cohort; analyses count, crosstab",
        ):
            assert shown in out
        assert "COMMITTEE-NOTE" not in out  # the committee's comments stay with the committee
        task_id = client.job(job.id).tasks["tre-b"].task_id
        assert task_id not in agent_tasks(net, "tre-b")  # not run while it waits

        # which, once approved, runs the task.
        code, _, err = cli(capsys, "agent", "inbox", "approve", request().request_id,
                           "--checker", "op", "--config", config)  # fmt: skip
        assert code == 0, err
        assert job.result(timeout=30).nodes["tre-b"].outcome == "released"


def test_a_project_without_application_says_so_in_the_tre_inbox(net, capsys):
    net.add_project("admin-made", members=("ada-quill",), nodes=("tre-b",),
                    datasets=("cohort",), analyses=("count",), auto_approve=("count",))  # fmt: skip
    agent = net.agents["tre-b"]
    with net.client("ada-quill") as client:
        job = client.submit("count", dataset="cohort", project="admin-made", nodes=["tre-b"])
        wait_for(lambda: client.job(job.id).tasks["tre-b"].outcome == "held", what="held")

    def request():
        found = [r for r in agent.approvals.requests() if r.project == "admin-made"]
        return found[0] if found and found[0].application_fetched else None

    wait_for(request, what="the coordinator's answer kept")
    assert request().application is None
    code, out, _ = cli(capsys, "agent", "inbox", "show", request().request_id, "--config",
                       str(net.directory / "nodes" / "tre-b" / "agent.toml"))  # fmt: skip
    assert code == 0 and "none on record" in out


# -- governance refusals --------------------------------------------------------------------


def test_self_approval_is_refused_and_audited(net):
    # Given an approver who is an applicant of the application,
    application = apply(net, "pi-study", who="pi-approver", applicants=["pi-approver"])
    mark = head(net)

    code = code_of(
        stub(net, "pi-approver").DecideApplication,
        pb.DecideApplicationRequest(id=application.id, decision="approve"),
    )

    assert code == grpc.StatusCode.PERMISSION_DENIED
    refused = refusals(net, mark, "pi-approver")
    assert refused and "nobody decides their own" in refused[0].details["reason"]
    with net.client("admin") as admin:
        assert admin.applications.application(application.id).decisions == ()


def test_a_researcher_cannot_decide_at_all(net):
    application = apply(net, "cardio-researcher-decides")
    mark = head(net)
    code = code_of(
        stub(net, "eve-outside").DecideApplication,
        pb.DecideApplicationRequest(id=application.id, decision="approve"),
    )
    # eve may not even read it: it does not exist for her.
    assert code == grpc.StatusCode.NOT_FOUND
    assert refusals(net, mark, "eve-outside")


@pytest.mark.parametrize(
    ("who", "applicants"),
    [
        ("ada-quill", ["ada-quill", "eve-outside"]),  # a co-applicant of another organisation
        ("mo-unlisted", ["mo-unlisted"]),  # a submitter of no recorded organisation
        ("eve-outside", ["eve-outside"]),  # applying for an organisation not hers
    ],
)
def test_an_applicant_outside_the_organisation_is_refused_and_audited(net, who, applicants):
    mark = head(net)
    before = len(net.coordinator.applications.store.applications())
    request = pb.SubmitApplicationRequest(
        form=pb.ApplicationForm(**form(f"outside-{who}", applicants=applicants))
    )

    assert code_of(stub(net, who).SubmitApplication, request) == grpc.StatusCode.PERMISSION_DENIED

    assert len(net.coordinator.applications.store.applications()) == before
    refused = refusals(net, mark, who)
    assert refused and ORG in refused[0].details["reason"]


def test_editing_an_approved_application_is_refused_and_audited(net):
    application = apply(net, "cardio-frozen")
    approve(net, application.id, "cy-approver")
    approve(net, application.id, "di-approver")
    mark = head(net)

    request = pb.ResubmitApplicationRequest(
        id=application.id, form=pb.ApplicationForm(**form("cardio-frozen", title="Changed"))
    )
    code = code_of(stub(net, "ada-quill").ResubmitApplication, request)

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert refusals(net, mark, "ada-quill")
    with net.client("ada-quill") as client:
        unchanged = client.applications.application(application.id)
    assert unchanged.version == 1 and unchanged.form["title"] == "Cardiac outcomes (cardio-frozen)"


def test_widening_the_scope_after_approval_is_refused_and_audited(net):
    # Given an application approved for tre-a only,
    application = apply(net, "cardio-narrow")
    approve(net, application.id, "cy-approver", nodes=["tre-a"])
    approve(net, application.id, "di-approver")
    mark = head(net)

    # the applicant cannot widen it by editing the application,
    wider = form("cardio-narrow", nodes=["tre-a", "tre-b"], analyses=["count", "linear_regression"])
    resubmit = pb.ResubmitApplicationRequest(id=application.id, form=pb.ApplicationForm(**wider))
    assert code_of(stub(net, "ada-quill").ResubmitApplication, resubmit) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    # nor by changing the project (admins only),
    update = admin_pb2.UpdateProjectRequest(
        name="cardio-narrow",
        project=admin_pb2.Project(nodes=["tre-a", "tre-b"]),
        update_mask={"paths": ["nodes"]},
    )
    admin_stub = admin_pb2_grpc.AdminServiceStub(token_channel(net, net.tokens["ada-quill"]))
    assert code_of(admin_stub.UpdateProject, update) == grpc.StatusCode.PERMISSION_DENIED
    # and no approver can approve it again with more.
    again = pb.DecideApplicationRequest(
        id=application.id, decision="approve", scope=pb.Scope(nodes=["tre-a", "tre-b"])
    )
    assert code_of(stub(net, "approver").DecideApplication, again) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )

    # Not even an admin widens it, or extends it past the approved end;
    with net.client("admin") as admin:
        for change in ({"nodes": ["tre-a", "tre-b"]}, {"expires": END + timedelta(days=1)}):
            with pytest.raises(Conflict, match="a wider scope needs a new application"):
                admin.admin.update_project("cardio-narrow", **change)
        # narrowing stays an admin's to do.
        assert admin.admin.update_project("cardio-narrow", analyses=["count"]).analyses == (
            "count",
        )

    assert net.coordinator.admin.governance.project("cardio-narrow").nodes == ("tre-a",)
    assert refusals(net, mark, "ada-quill") and refusals(net, mark, "approver")
    assert len(refusals(net, mark, "admin")) == 2
    assert events(net, mark, "access.denied")  # the project update, by the role check


def test_an_approval_wider_than_the_request_is_refused_and_audited(net):
    application = apply(net, "cardio-wider", nodes=["tre-a"])
    mark = head(net)
    request = pb.DecideApplicationRequest(
        id=application.id, decision="approve", scope=pb.Scope(nodes=["tre-a", "tre-b"])
    )

    assert code_of(stub(net, "cy-approver").DecideApplication, request) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )

    refused = refusals(net, mark, "cy-approver")
    assert refused and "never widen" in refused[0].details["reason"]
    with net.client("admin") as admin:
        assert admin.applications.application(application.id).decisions == ()


def test_reading_someone_elses_application_is_refused_and_audited(net):
    application = apply(net, "cardio-private")
    mark = head(net)
    eve = stub(net, "eve-outside")

    theirs = code_of(eve.GetApplication, pb.GetApplicationRequest(id=application.id))
    missing = code_of(eve.GetApplication, pb.GetApplicationRequest(id=987654))

    # then it is NOT_FOUND exactly as a missing one is, and the attempt is audited,
    assert theirs == missing == grpc.StatusCode.NOT_FOUND
    refused = refusals(net, mark, "eve-outside")
    assert [e.subject for e in refused] == [f"application:{application.id}"]
    # and her list does not show it.
    with net.client("eve-outside") as client:
        assert application.id not in {a.id for a in client.applications.applications()}
        with pytest.raises(NotFound):
            client.applications.application(application.id)
    # The committee reads it.
    with net.client("cy-approver") as client:
        assert client.applications.application(application.id).id == application.id


def test_affiliations_are_recorded_by_admins_only(net):
    request = pb.SetAffiliationRequest(
        affiliation=pb.Affiliation(user="eve-outside", organisation=ORG, accredited=True)
    )
    assert code_of(stub(net, "eve-outside").SetAffiliation, request) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert code_of(stub(net, "cy-approver").SetAffiliation, request) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_a_person_cannot_ask_for_a_projects_application_as_an_agent(net):
    request = pb.GetProjectApplicationRequest(project="cardio")
    assert code_of(stub(net, "admin").GetProjectApplication, request) in (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    )


# -- bad input ------------------------------------------------------------------------------


_TARGETS = itertools.count()


def _submit(**changes: object) -> pb.SubmitApplicationRequest:
    return pb.SubmitApplicationRequest(form=pb.ApplicationForm(**form("bad-input", **changes)))


@pytest.mark.parametrize(
    ("method", "request_", "expected"),
    [
        ("SubmitApplication", pb.SubmitApplicationRequest(), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(start_date="31/12/2027"), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(title="x" * 100_000), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(lay_summary="a\x00b"), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(nodes=["../etc"]), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(nodes=[f"n{i}" for i in range(500)]), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(analyses=["sql"]), "INVALID_ARGUMENT"),
        ("SubmitApplication", _submit(applicants=["nobody-here"]), "INVALID_ARGUMENT"),
        ("DecideApplication", pb.DecideApplicationRequest(id=-1, decision="approve"), "NOT_FOUND"),
        ("DecideApplication", pb.DecideApplicationRequest(decision="maybe"),
         "INVALID_ARGUMENT"),
        ("DecideApplication", pb.DecideApplicationRequest(
            decision="approve", scope=pb.Scope(end_date="tomorrow")), "INVALID_ARGUMENT"),
        ("ListApplications", pb.ListApplicationsRequest(state="bogus"), "INVALID_ARGUMENT"),
        ("AddPublication", pb.AddPublicationRequest(publication="two words"),
         "INVALID_ARGUMENT"),
        ("GetProjectApplication", pb.GetProjectApplicationRequest(project="x"), "UNAUTHENTICATED"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_proper_status_never_internal(net, method, request_, expected):
    # Requests without an id are about a real application, of ada's.
    request = type(request_)()
    request.CopyFrom(request_)
    if hasattr(request, "id") and request.id == 0:
        request.id = apply(net, f"bad-input-{next(_TARGETS)}").id
    who = "ada-quill" if method in ("AddPublication", "SubmitApplication") else "cy-approver"

    code = code_of(getattr(stub(net, who), method), request)

    assert code == getattr(grpc.StatusCode, expected)


# -- the command line ----------------------------------------------------------------------


def test_the_journey_through_the_cli(net, capsys, tmp_path):
    # Given ada's form as a TOML file,
    values = form("cli-study", analyses=["count"])
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "application.toml"
    path.write_text("\n".join(lines) + "\n")

    def as_(who: str, *argv: str) -> tuple[int, str, str]:
        return cli(capsys, *argv, "--coordinator", net.api_address,
                   "--identity", str(net.identity(who)))  # fmt: skip

    # she applies (a flag wins over the file),
    code, out, err = as_(
        "ada-quill", "apply", "--file", str(path), "--title", "CLI study", "--json"
    )
    assert code == 0, err
    app_id = json.loads(out)["id"]
    assert json.loads(out)["form"]["title"] == "CLI study"
    # the committee lists, reads and approves it,
    code, out, _ = as_("cy-approver", "applications", "list", "--state", "submitted")
    assert code == 0 and "cli-study" in out
    code, out, _ = as_("cy-approver", "applications", "show", str(app_id))
    assert code == 0 and "ada-quill (accredited)" in out and "9(2)(j)" in out
    code, out, _ = as_("cy-approver", "applications", "approve", str(app_id), "--nodes", "tre-a")
    assert code == 0 and "1 of 2" in out
    code, out, _ = as_("di-approver", "applications", "approve", str(app_id))
    assert code == 0 and "project 'cli-study' created" in out
    # she publishes an output, and the public register shows the project without a token.
    code, _, err = as_("ada-quill", "applications", "publish", str(app_id), "doi:10.1234/cli")
    assert code == 0, err
    url = f"http://127.0.0.1:{net.coordinator.metrics_port}"
    code, out, err = cli(capsys, "register", "--url", url, "--json")
    assert code == 0, err
    entry = next(e for e in json.loads(out)["entries"] if e["project_id"] == "cli-study")
    assert entry["project_title"] == "CLI study"
    assert entry["tres"] == ["tre-a"] and entry["outputs"] == ["doi:10.1234/cli"]
    code, out, _ = cli(capsys, "register", "--url", url)
    assert code == 0 and "cli-study" in out


def test_the_cli_explains_a_refusal(net, capsys):
    application = apply(net, "cli-refusal")
    code, _, err = cli(
        capsys, "applications", "approve", str(application.id), "--coordinator",
        net.api_address, "--identity", str(net.identity("ada-quill")),
    )  # fmt: skip
    assert code == 2
    assert "error:" in err and "only approvers and admins sit on the data access committee" in err


def test_a_form_file_that_is_not_toml_says_so(net, capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("title = \n")
    code, _, err = cli(
        capsys, "apply", "--file", str(path), "--coordinator", net.api_address,
        "--identity", str(net.identity("ada-quill")),
    )  # fmt: skip
    assert code == 2 and "not valid TOML" in err


def test_the_organisations_list_says_yes_or_no_for_accreditation(net, capsys):
    admin = ["--coordinator", net.api_address, "--identity", str(net.identity("admin"))]

    code, out, err = cli(capsys, "organisations", "list", *admin)

    assert code == 0, err
    rows = {line.split()[0]: f"{line} " for line in out.splitlines() if line.strip()}
    assert " yes " in rows["ada-quill"] and " no " in rows["ben-marsh"]
    assert "True" not in out and "False" not in out
