"""Bad requests get a clear error and the right gRPC status, and nothing is queued."""

from __future__ import annotations

import grpc
import pytest

from fedtre.errors import Conflict, InvalidRequest, NotFound
from fedtre.testing import LocalNetwork
from fedtre.v1 import jobs_pb2, jobs_pb2_grpc
from fedtre.wire import dict_to_struct

TIMEOUT = 10


@pytest.fixture(scope="module")
def network(parts):
    data = {node: {"cohort": frame} for node, frame in parts.items()}
    with LocalNetwork(data, auto_approve=False) as net:
        yield net


def submit_raw(net, analysis: str, dataset: str, params: dict, dry_run: bool = False):
    with net.channel("researcher") as ch:
        spec = jobs_pb2.JobSpec(analysis=analysis, dataset=dataset, params=dict_to_struct(params))
        return jobs_pb2_grpc.JobServiceStub(ch).SubmitJob(
            jobs_pb2.SubmitJobRequest(spec=spec, dry_run=dry_run), timeout=TIMEOUT
        )


def job_count(net) -> int:
    with net.client("admin") as admin:
        return len(admin.jobs(limit=1000))


@pytest.mark.parametrize(
    ("analysis", "dataset", "params", "expected_words"),
    [
        (
            "count",
            "cohort",
            {"filter": {"col": "postcode", "op": "==", "value": "AB1"}},
            ["postcode", "not declared"],
        ),
        ("count", "cohort", {"filter": {"col": "age", "op": "LIKE", "value": "1%"}}, ["LIKE"]),
        ("count", "cohort", {"filter": {"col": "age"}}, ["op"]),
        ("regress", "cohort", {}, ["unknown analysis", "regress"]),
        ("count", "genomes", {}, ["genomes"]),
        ("crosstab", "cohort", {"rows": "sex", "colour": "red"}, ["colour"]),
    ],
    ids=[
        "undeclared-column",
        "unknown-operator",
        "malformed-filter",
        "unknown-analysis",
        "unknown-dataset",
        "unknown-param",
    ],
)
def test_bad_submission_is_invalid_argument_and_queues_nothing(
    network, analysis, dataset, params, expected_words
):
    before = job_count(network)

    with pytest.raises(grpc.RpcError) as err:
        submit_raw(network, analysis, dataset, params)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in expected_words:
        assert word.lower() in err.value.details().lower()
    assert job_count(network) == before


def test_client_raises_invalid_request_with_the_servers_message(network):
    with network.client() as client, pytest.raises(InvalidRequest, match="postcode"):
        client.submit(
            "count", dataset="cohort", params={"filter": {"col": "postcode", "op": "is_null"}}
        )


def test_dry_run_reports_every_problem_at_once_and_queues_nothing(network):
    before = job_count(network)
    with network.client() as client:
        report = client.submit(
            "crosstab",
            dataset="cohort",
            params={"rows": "postcode", "columns": "ethnicity"},
            dry_run=True,
        )
    messages = " ".join(m for _, m in report.problems)
    assert not report.ok
    assert "postcode" in messages and "ethnicity" in messages
    # one problem per column per node
    assert {node for node, _ in report.problems} == {"tre-a", "tre-b", "tre-c"}
    assert job_count(network) == before


def test_dry_run_of_a_good_request_finds_no_problem(network):
    with network.client() as client:
        report = client.submit(
            "summary", dataset="cohort", params={"column": "sbp", "by": "sex"}, dry_run=True
        )
    assert report.ok, report.problems


def test_unknown_job_is_not_found(network):
    with network.client() as client, pytest.raises(NotFound, match="no job 999999"):
        client.job(999999)


def test_unknown_target_node_is_reported(network):
    with network.client() as client, pytest.raises(InvalidRequest, match="tre-z"):
        client.submit("count", dataset="cohort", nodes=["tre-a", "tre-z"])


def test_approval_flow_and_double_decision(network, pooled):
    with network.client() as researcher, network.client("admin") as admin:
        handle = researcher.submit("count", dataset="cohort")
        assert handle.status().state == "pending_approval"
        admin.approve(handle.id)
        result = handle.result(timeout=60)
        assert result.state in ("completed", "partial")
        with pytest.raises(Conflict, match="not pending approval"):
            admin.approve(handle.id)


def test_rejected_job_never_reaches_an_agent(network):
    with network.client() as researcher, network.client("admin") as admin:
        handle = researcher.submit("count", dataset="cohort")
        with pytest.raises(InvalidRequest, match="reason"):
            admin.reject(handle.id, "  ")
        status = admin.reject(handle.id, "outside the project's scope")
    assert status.state == "rejected"
    assert status.reason == "outside the project's scope"
    assert status.tasks == {}


def test_a_researcher_cannot_see_a_job_of_a_project_they_are_not_in(network):
    network.add_user("bob", projects=())
    with (
        network.client() as alice,
        network.client("bob") as bob,
        network.client("admin") as admin,
    ):
        job_id = alice.submit("count", dataset="cohort").id
        with pytest.raises(NotFound, match=f"no job {job_id}"):
            bob.job(job_id)
        assert admin.job(job_id).submitted_by == "researcher"
        assert alice.job(job_id).id == job_id


def test_a_bad_project_name_is_refused(network):
    with network.client() as client, pytest.raises(InvalidRequest, match="project name"):
        client.submit("count", dataset="cohort", project="x" * 100)
