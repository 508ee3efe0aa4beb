"""The public Data Use Register: served without a token, and never a private value.

The network holds approved, withdrawn, rejected and pending applications, each private
field filled with a marker no public field contains, and a job run in an approved
project. Every register response (JSON, CSV, the CLI's views, a wrong path) and the
public catalogue served beside it (nothing described here: empty) are swept
for every private value: tokens and token ids, people's names, committee comments, the
technical summary, funders, linkage, expected outputs, job parameters, task ids and
results.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from datetime import date, timedelta

import pytest
from sectools import OPEN_POLICY, cli, data, start

from coordinator.domain import register
from fedtre.errors import Conflict, PermissionDenied
from fedtre.testing import LocalNetwork

ORG = "Westfield Health Institute"
END = date.today() + timedelta(days=200)
PEOPLE = ("quinn-ashgrove", "rafe-oakhurst", "sage-birchwood", "tam-elmsworth")
FILTER = {"col": "bmi", "op": ">=", "value": 23.75}


def private(project: str, field: str) -> str:
    return f"PRIVATE-{field}-{project}"


def form(project: str) -> dict[str, object]:
    return {
        "applicants": ["quinn-ashgrove", "rafe-oakhurst"],
        "organisation": ORG,
        "project_name": project,
        "title": f"Public title of {project}",
        "lay_summary": f"Public lay summary of {project}.",
        "public_benefit": f"Public benefit of {project}.",
        "technical_summary": private(project, "technical"),
        "funders": [private(project, "funder")],
        "start_date": date.today().isoformat(),
        "end_date": END.isoformat(),
        "article6": "6(1)(e)",
        "article9": "9(2)(h)",
        "duty_of_confidentiality": "Section 251 support",
        "national_data_opt_out": "Applied",
        "nodes": ["tre-a", "tre-b"],
        "datasets": ["cohort"],
        "analyses": ["count"],
        "linkage": private(project, "linkage"),
        "expected_outputs": private(project, "outputs"),
    }


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a", "tre-b"),
            policy=OPEN_POLICY,
            auto_approve=False,
            ping_interval=0.3,
            metrics=True,
            directory=tmp_path_factory.mktemp("register"),
        )
    )
    network.add_user("quinn-ashgrove", "researcher", projects=())
    network.add_user("rafe-oakhurst", "researcher", projects=())
    network.add_user("sage-birchwood", "approver", projects=())
    network.add_user("tam-elmsworth", "approver", projects=())
    with network.client("admin") as admin:
        for person in ("quinn-ashgrove", "rafe-oakhurst"):
            admin.applications.set_affiliation(person, ORG, sector="NHS", accredited=True)
    yield network
    network.stop()


@pytest.fixture(scope="module")
def world(net):
    """Applications in every state, a job with results; returns the private values."""
    secrets: set[str] = set(net.tokens.values())
    secrets |= {t.split(".")[1] for t in net.tokens.values()}  # the public token ids too
    secrets |= set(PEOPLE)
    ids = {}
    with net.client("quinn-ashgrove") as quinn, net.client("sage-birchwood") as sage:
        for project in ("reg-active", "reg-withdrawn", "reg-rejected", "reg-pending"):
            ids[project] = quinn.applications.apply(form(project)).id
            secrets |= {private(project, f) for f in ("technical", "funder", "linkage", "outputs")}
        for project in ("reg-active", "reg-withdrawn"):
            comment = private(project, "approval-comment")
            sage.applications.approve(ids[project], comment, nodes=["tre-a"])
            secrets.add(comment)
        rejection = private("reg-rejected", "rejection")
        sage.applications.reject(ids["reg-rejected"], rejection)
        withdrawal = private("reg-withdrawn", "withdrawal")
        quinn.applications.withdraw(ids["reg-withdrawn"], withdrawal)
        quinn.applications.add_publication(ids["reg-active"], "https://doi.org/10.5555/reg")
        secrets |= {rejection, withdrawal}
        # A job in the active project, with parameters and a result.
        job = quinn.submit(
            "count", dataset="cohort", project="reg-active", params={"filter": FILTER}
        )
        with net.client("tam-elmsworth") as tam:
            tam.approve(job.id)
        result = job.result(timeout=30)
        assert result.state == "completed"
    secrets.add(json.dumps(FILTER, sort_keys=True))
    secrets.add(str(FILTER["value"]))
    secrets |= {t.task_id for t in net.coordinator.store.get_job(job.id).tasks}
    secrets.add(json.dumps(result.combined, sort_keys=True))
    return ids, secrets


def get(net: LocalNetwork, path: str, headers: dict[str, str] | None = None):
    url = f"http://127.0.0.1:{net.coordinator.metrics_port}{path}"
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def entries(net: LocalNetwork) -> dict[str, dict]:
    status, _, body = get(net, "/register.json")
    assert status == 200
    return {e["project_id"]: e for e in json.loads(body)["entries"]}


def test_the_register_is_served_without_a_token_as_json_and_csv(net, world):
    status, headers, body = get(net, "/register.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    status, headers, text = get(net, "/register.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")

    rows = list(csv.DictReader(io.StringIO(text)))
    by_json = json.loads(body)["entries"]
    assert [r["project_id"] for r in rows] == [e["project_id"] for e in by_json]
    assert tuple(rows[0]) == register.FIELDS


def test_approved_projects_are_listed_with_the_public_fields_only(net, world):
    listed = entries(net)

    assert set(listed) == {"reg-active", "reg-withdrawn"}  # never rejected or pending ones
    active = listed["reg-active"]
    assert tuple(active) == register.FIELDS
    assert active["project_title"] == "Public title of reg-active"
    assert active["organisation_name"] == ORG and active["organisation_sector"] == "NHS"
    assert active["legal_basis_article9"] == "UK GDPR Article 9(2)(h)"
    assert active["datasets"] == ["cohort"] and active["tres"] == ["tre-a"]  # as approved
    assert active["access_type"] == "TRE"
    assert active["project_end_date"] == END.isoformat()
    assert active["latest_approval_date"] == date.today().isoformat()
    assert active["status"] == "active"
    assert active["outputs"] == ["https://doi.org/10.5555/reg"]


def test_a_withdrawn_project_stays_marked_and_its_project_has_lapsed(net, world):
    assert entries(net)["reg-withdrawn"]["status"] == "withdrawn"
    project = net.coordinator.admin.governance.project("reg-withdrawn")
    assert project.lapsed(net.coordinator.applications.clock())
    # and no admin reopens it: that takes a new application.
    with net.client("admin") as admin, pytest.raises(Conflict, match="was withdrawn"):
        admin.admin.update_project("reg-withdrawn", expires=END)


def test_a_job_in_a_withdrawn_project_is_refused_saying_it_was_withdrawn(net, world):
    with net.client("quinn-ashgrove") as quinn, pytest.raises(PermissionDenied) as refused:
        quinn.submit("count", dataset="cohort", project="reg-withdrawn")

    message = str(refused.value)
    assert "project 'reg-withdrawn': its data-access approval was withdrawn on " in message
    assert "''" not in message


def test_an_expired_project_stays_marked(net, world):
    applications = net.coordinator.applications
    real_clock = applications.clock
    applications.clock = lambda: real_clock() + timedelta(days=400)
    try:
        listed = entries(net)
    finally:
        applications.clock = real_clock
    assert listed["reg-active"]["status"] == "expired"
    assert listed["reg-withdrawn"]["status"] == "withdrawn"


def test_no_register_response_holds_a_private_value(net, world, capsys):
    _, secrets = world
    url = f"http://127.0.0.1:{net.coordinator.metrics_port}"
    bodies = [
        get(net, path, headers)[2]
        for path in (
            "/register.json",
            "/register.csv",
            "/register.json?all=1",
            "/register",
            "/catalogue.json",
        )
        for headers in ({}, {"Authorization": f"Bearer {net.tokens['admin']}"})
    ]
    for argv in ((), ("--csv",), ("--json",)):
        code, out, err = cli(capsys, "register", "--url", url, *argv)
        assert code == 0, err
        bodies.append(out + err)

    assert any("reg-active" in b for b in bodies)  # the sweep reads real registers
    assert json.loads(get(net, "/catalogue.json")[2]) == {"entries": []}  # nothing described
    leaked = sorted({s for s in secrets for b in bodies if s in b})
    assert not leaked, f"the register shows private values: {leaked}"
