"""Every RPC taking a Timestamp or a Struct refuses a bad one with INVALID_ARGUMENT.

The RPCs are found from the protos, so a new RPC with such a field is not forgotten: the
test fails until it is listed here with a bad request.
"""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import struct_pb2

from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork
from fedtre.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, jobs_pb2, jobs_pb2_grpc

TIMEOUT = 10
WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Struct"}


def takes_well_known(message, seen=()) -> bool:
    for field in message.fields:
        kind = field.message_type
        if kind is None or kind.full_name in seen:
            continue
        if kind.full_name in WELL_KNOWN:
            return True
        if not kind.full_name.startswith("google.") and takes_well_known(
            kind, (*seen, kind.full_name)
        ):
            return True
    return False


def rpcs_taking_well_known() -> set[str]:
    return {
        method.name
        for module in (admin_pb2, agent_pb2, jobs_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if takes_well_known(method.input_type)
    }


def nan_struct() -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.fields["mean"].number_value = math.nan
    return struct


@pytest.fixture(scope="module")
def network(parts):
    with LocalNetwork({n: {"cohort": f} for n, f in parts.items()}) as net:
        yield net


def call_create_project(net):
    with net.channel("admin") as ch:
        project = admin_pb2.Project(name="far-future")
        project.approval_expires_at.seconds = 10**13  # past year 9999
        return admin_pb2_grpc.AdminServiceStub(ch).CreateProject(
            admin_pb2.CreateProjectRequest(project=project), timeout=TIMEOUT
        )


def call_update_project(net):
    with net.channel("admin") as ch:
        project = admin_pb2.Project()
        project.approval_expires_at.seconds = 1_800_000_000
        project.approval_expires_at.nanos = -1
        request = admin_pb2.UpdateProjectRequest(name="default", project=project)
        request.update_mask.paths.append("approval_expires_at")
        return admin_pb2_grpc.AdminServiceStub(ch).UpdateProject(request, timeout=TIMEOUT)


def call_submit_job(net):
    with net.channel("researcher") as ch:
        spec = jobs_pb2.JobSpec(analysis="count", dataset="cohort", params=nan_struct())
        return jobs_pb2_grpc.JobServiceStub(ch).SubmitJob(
            jobs_pb2.SubmitJobRequest(spec=spec), timeout=TIMEOUT
        )


def call_report_result(net):
    node = next(iter(net.agents))
    creds = channel_credentials(TlsFiles.from_dir(net.pki / "nodes" / node))
    with grpc.secure_channel(net.address, creds) as ch:
        return agent_pb2_grpc.AgentServiceStub(ch).ReportResult(
            agent_pb2.ReportResultRequest(task_id="t-1", payload=nan_struct()), timeout=TIMEOUT
        )


BAD_CALLS = {
    "CreateProject": (call_create_project, ["project.approval_expires_at", "9999"]),
    "UpdateProject": (call_update_project, ["project.approval_expires_at", "nanos"]),
    "SubmitJob": (call_submit_job, ["spec.params", "finite"]),
    "ReportResult": (call_report_result, ["payload", "finite"]),
}


def test_every_rpc_taking_a_timestamp_or_struct_is_covered():
    assert rpcs_taking_well_known() == set(BAD_CALLS)


@pytest.mark.parametrize("rpc", sorted(BAD_CALLS))
def test_a_bad_timestamp_or_struct_is_invalid_argument(network, rpc):
    call, words = BAD_CALLS[rpc]
    with pytest.raises(grpc.RpcError) as err:
        call(network)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for word in words:
        assert word in err.value.details()


def test_the_valid_bound_is_accepted(network):
    with network.channel("admin") as ch:
        project = admin_pb2.Project(
            name="last-day", nodes=list(network.agents), datasets=["cohort"], analyses=["count"]
        )
        project.approval_expires_at.seconds = 253_402_300_799  # 9999-12-31T23:59:59Z
        response = admin_pb2_grpc.AdminServiceStub(ch).CreateProject(
            admin_pb2.CreateProjectRequest(project=project), timeout=TIMEOUT
        )
    assert response.project.approval_expires_at.seconds == 253_402_300_799
