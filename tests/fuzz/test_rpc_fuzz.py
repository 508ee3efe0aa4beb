"""Every RPC answers hypothesis-generated input with a proper status code, and the
coordinator stays healthy with consistent state.

Random fields, wrong shapes, huge strings, deep structures, unicode, negative numbers
and raw corrupt bytes go to a real coordinator over mutual TLS. INTERNAL and UNKNOWN
are failures: they mean an input reached code that did not expect it.
"""

from __future__ import annotations

import os
import time

import grpc
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtre.credentials import person_credentials
from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork
from fedtre.v1 import agent_pb2, agent_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from fedtre.wire import dict_to_struct

ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
FUZZ = settings(
    max_examples=int(os.environ.get("FEDTRE_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["age", "sex", "==", "in", "is_null", "and", "or", "not", "col", "op"])
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
keys = st.sampled_from(["filter", "rows", "columns", "column", "by", "margins"]) | st.text(
    max_size=12
)
params = st.dictionaries(keys, json_values, max_size=5)
names = st.sampled_from(["count", "crosstab", "summary", "", "regress"]) | st.text(max_size=100)
huge = st.just("x" * 200_000) | st.text(min_size=1, max_size=5).map(lambda s: s * 2000)


@pytest.fixture(scope="module")
def network():
    frame = pd.DataFrame({"age": list(range(20, 80)) * 3, "sex": ["F", "M", "F"] * 60})
    with LocalNetwork(
        {"tre-a": {"cohort": frame}, "tre-b": {"cohort": frame.head(90)}},
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
    ) as net:
        yield net


def stub(net, cls, *identity):
    if identity[0] == "users":
        # People: their client certificate (optional) and their API token (required).
        credentials = person_credentials(net.pki.joinpath(*identity))
        return cls(grpc.secure_channel(net.address, credentials))
    files = TlsFiles.from_dir(net.pki.joinpath(*identity))
    return cls(grpc.secure_channel(net.address, channel_credentials(files)))


def code_of(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=20)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        assert exc.code() in ACCEPTABLE, (exc.code(), exc.details())
        return exc.code()


@FUZZ
@given(
    analysis=names,
    dataset=st.sampled_from(["cohort", ""]) | st.text(max_size=50),
    p=params,
    nodes=st.lists(st.sampled_from(["tre-a", "tre-b"]) | st.text(max_size=20), max_size=3),
    project=st.sampled_from(["default", ""]) | st.text(max_size=80),
    dry_run=st.booleans(),
)
def test_submit_job(network, analysis, dataset, p, nodes, project, dry_run):
    jobs = stub(network, jobs_pb2_grpc.JobServiceStub, "users", "researcher")
    spec = jobs_pb2.JobSpec(
        analysis=analysis, dataset=dataset, params=dict_to_struct(p), nodes=nodes, project=project
    )
    code_of(jobs.SubmitJob, jobs_pb2.SubmitJobRequest(spec=spec, dry_run=dry_run))


@FUZZ
@given(text=huge, where=st.sampled_from(["analysis", "dataset", "project", "param"]))
def test_submit_job_with_huge_strings(network, text, where):
    jobs = stub(network, jobs_pb2_grpc.JobServiceStub, "users", "researcher")
    fields = {"analysis": "count", "dataset": "cohort", "project": "default"}
    p = {"filter": {"col": "sex", "op": "==", "value": text}} if where == "param" else {}
    if where != "param":
        fields[where] = text
    spec = jobs_pb2.JobSpec(params=dict_to_struct(p), **fields)
    assert code_of(jobs.SubmitJob, jobs_pb2.SubmitJobRequest(spec=spec)) != grpc.StatusCode.OK


@FUZZ
@given(
    job_id=st.integers(-(2**63), 2**63 - 1),
    reason=st.text(max_size=300),
    state=st.integers(-5, 20),
    limit=st.integers(-(2**31), 2**31 - 1),
)
def test_job_lookups_and_decisions(network, job_id, reason, state, limit):
    admin = stub(network, jobs_pb2_grpc.JobServiceStub, "users", "admin")
    code_of(admin.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))
    code_of(admin.ListJobs, jobs_pb2.ListJobsRequest(state=state, limit=limit))
    code_of(admin.ApproveJob, jobs_pb2.ApproveJobRequest(job_id=job_id))
    code_of(admin.RejectJob, jobs_pb2.RejectJobRequest(job_id=job_id, reason=reason))
    code_of(admin.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id, reason=reason))


@FUZZ
@given(
    deadline=st.integers(-(2**31), 2**31 - 1),
    on_pause=st.integers(-3, 10),
    request_id=st.text(max_size=100) | huge,
    cancel_reason=st.text(max_size=50) | huge,
)
def test_job_lifecycle_options(network, deadline, on_pause, request_id, cancel_reason):
    jobs = stub(network, jobs_pb2_grpc.JobServiceStub, "users", "researcher")
    spec = jobs_pb2.JobSpec(
        analysis="count",
        dataset="cohort",
        project="default",
        deadline_seconds=deadline,
        on_pause=on_pause,
    )
    request = jobs_pb2.SubmitJobRequest(spec=spec, request_id=request_id)
    try:
        submitted = jobs.SubmitJob(request, timeout=20)
    except grpc.RpcError as exc:
        assert exc.code() in ACCEPTABLE, (exc.code(), exc.details())
        return
    assert 1 <= submitted.job.spec.deadline_seconds <= 7 * 24 * 3600
    code_of(
        jobs.CancelJob, jobs_pb2.CancelJobRequest(job_id=submitted.job.id, reason=cancel_reason)
    )


@FUZZ
@given(
    task_id=st.text(max_size=60),
    outcome=st.integers(-3, 40),
    p=params,
    rules=st.lists(
        st.tuples(st.text(max_size=40), st.booleans(), st.text(max_size=200)), max_size=5
    ),
    error=st.text(max_size=300),
)
def test_report_result(network, task_id, outcome, p, rules, error):
    agent = stub(network, agent_pb2_grpc.AgentServiceStub, "nodes", "tre-a")
    request = agent_pb2.ReportResultRequest(
        task_id=task_id,
        outcome=outcome,
        payload=dict_to_struct(p),
        error=error,
        rules=[{"rule": r, "passed": ok, "detail": d} for r, ok, d in rules],
    )
    assert code_of(agent.ReportResult, request) != grpc.StatusCode.OK


METHODS = [
    "/fedtre.v1.JobService/SubmitJob",
    "/fedtre.v1.JobService/GetJob",
    "/fedtre.v1.JobService/ListJobs",
    "/fedtre.v1.JobService/ApproveJob",
    "/fedtre.v1.AgentService/ReportResult",
]


@FUZZ
@given(method=st.sampled_from(METHODS), data=st.binary(max_size=2000))
def test_raw_bytes(network, method, data):
    if "Agent" in method:
        credentials = channel_credentials(TlsFiles.from_dir(network.pki / "nodes" / "tre-a"))
    else:
        credentials = person_credentials(network.pki / "users" / "admin")
    with grpc.secure_channel(network.address, credentials) as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        code_of(call, data)


def test_the_coordinator_is_healthy_and_consistent_afterwards(network):
    health = stub(network, health_pb2_grpc.HealthStub, "users", "admin")
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    store = network.coordinator.store
    deadline = time.monotonic() + 60
    while any(j.state.value == "running" for j in store.list_jobs(None, 100_000)):
        assert time.monotonic() < deadline, "fuzzed jobs did not all finish"
        time.sleep(0.1)
    for job in store.list_jobs(None, 100_000):
        if job.state.value in ("pending_approval", "rejected"):
            assert job.tasks == ()
        elif job.state.value == "cancelled":
            # every task closed (nothing left to deliver), nothing combined
            assert all(t.output is not None for t in job.tasks) and job.combined is None
        else:
            assert job.tasks and all(t.output is not None for t in job.tasks)
            assert job.combined is not None
