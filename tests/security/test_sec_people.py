"""Safe people: who may call at all, and with which role. Each attack is refused and audited."""

from __future__ import annotations

import hashlib
import sqlite3

import grpc
import pytest
from sectools import (
    OPEN_POLICY,
    RECORDS,
    TOKENS,
    cli,
    code_of,
    data,
    events,
    head,
    start,
    token_channel,
)

from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork
from fedtre.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from fedtre.wire import dict_to_struct

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
JOB_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]
# What every person may call; every other AdminService method is for admins only.
EVERYONE = {"WhoAmI", "GetProject", "ListProjects"}
ADMIN_ONLY = sorted(m.name for m in ADMIN_SERVICE.methods if m.name not in EVERYONE)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a", "tre-b"),
            policy=OPEN_POLICY,
            auto_approve=False,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("people"),
        )
    )
    yield network
    network.stop()


def submit_request() -> jobs_pb2.SubmitJobRequest:
    return jobs_pb2.SubmitJobRequest(
        spec=jobs_pb2.JobSpec(
            analysis="count", dataset="cohort", params=dict_to_struct({}), project="default"
        )
    )


def job_count(net: LocalNetwork) -> int:
    return len(net.coordinator.store.list_jobs(None, 1000))


def admin_args(net: LocalNetwork, *argv: str) -> list[str]:
    return [*argv, "--coordinator", net.api_address, "--identity", str(net.identity("admin"))]


@pytest.mark.parametrize(
    "token",
    [None, "", "ft1.nope.nope", "not-a-token-at-all", "ft1.0123456789ab.wrong-secret"],
)
def test_a_call_without_a_valid_token_is_unauthenticated_and_audited(net, token):
    # Given no token, an empty one, an unknown one or a malformed one,
    before, jobs = head(net), job_count(net)
    with token_channel(net, token) as channel:
        jobs_stub = jobs_pb2_grpc.JobServiceStub(channel)
        admin_stub = admin_pb2_grpc.AdminServiceStub(channel)
        # when it submits a job, lists jobs and asks who it is,
        codes = {
            code_of(jobs_stub.SubmitJob, submit_request()),
            code_of(jobs_stub.ListJobs, jobs_pb2.ListJobsRequest()),
            code_of(admin_stub.WhoAmI, admin_pb2.WhoAmIRequest()),
        }
    # then every call is UNAUTHENTICATED,
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    # each refusal is audited against nobody,
    failed = events(net, before, "auth.failed")
    assert [e.details["method"] for e in failed] == ["SubmitJob", "ListJobs", "WhoAmI"]
    assert {e.actor for e in failed} == {"anonymous"}
    # Only a well-formed public id is recorded, never anything else the caller sent.
    expected = {"0123456789ab"} if token and token.startswith("ft1.0123") else {None}
    assert {e.details.get("token_id") for e in failed} == expected
    # and no job was written.
    assert job_count(net) == jobs


def test_a_revoked_token_is_unauthenticated_at_once_and_audited(net, capsys, tmp_path):
    # Given a person whose token works,
    net.add_user("revokee", "researcher")
    token = net.tokens["revokee"]
    TOKENS.add(token)
    with token_channel(net, token) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        assert code_of(stub.ListJobs, jobs_pb2.ListJobsRequest()) == grpc.StatusCode.OK
        token_id = token.split(".")[1]
        # when an admin revokes it with the CLI,
        code, out, _ = cli(capsys, *admin_args(net, "tokens", "revoke", token_id))
        assert code == 0 and "revoked" in out
        before, jobs = head(net), job_count(net)
        # then its next calls are UNAUTHENTICATED,
        assert code_of(stub.SubmitJob, submit_request()) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(stub.ListJobs, jobs_pb2.ListJobsRequest()) == grpc.StatusCode.UNAUTHENTICATED
    # audited with the token's public id and the reason (never the token),
    failed = events(net, before, "auth.failed")
    assert [(e.actor, e.details["reason"], e.details["token_id"]) for e in failed] == [
        ("revokee", "token revoked", token_id)
    ] * 2
    assert token not in str([e.to_json() for e in failed])
    # and nothing was submitted.
    assert job_count(net) == jobs


def test_a_disabled_persons_token_stops_working_and_is_audited(net, capsys):
    net.add_user("leaver", "researcher")
    token = net.tokens["leaver"]
    with token_channel(net, token) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        assert code_of(stub.WhoAmI, admin_pb2.WhoAmIRequest()) == grpc.StatusCode.OK
        code, out, _ = cli(capsys, *admin_args(net, "users", "disable", "leaver"))
        assert code == 0 and "disabled" in out
        before = head(net)
        assert code_of(stub.WhoAmI, admin_pb2.WhoAmIRequest()) == grpc.StatusCode.UNAUTHENTICATED
        failed = events(net, before, "auth.failed")
        assert [(e.actor, e.details["reason"]) for e in failed] == [("leaver", "user disabled")]
        # Enabled again, the same token works again: disabling is not revoking.
        assert cli(capsys, *admin_args(net, "users", "enable", "leaver"))[0] == 0
        assert code_of(stub.WhoAmI, admin_pb2.WhoAmIRequest()) == grpc.StatusCode.OK


def test_an_expired_token_is_unauthenticated_and_audited(net):
    net.add_user("visitor", "researcher")
    token = net.tokens["visitor"]
    token_id = token.split(".")[1]
    # The token's expiry passes (moved into the past, as time would).
    with sqlite3.connect(net.directory / "coordinator.sqlite") as conn:
        conn.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE token_id = ?",
            (token_id,),
        )
    before, jobs = head(net), job_count(net)
    with token_channel(net, token) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        assert code_of(stub.SubmitJob, submit_request()) == grpc.StatusCode.UNAUTHENTICATED
    failed = events(net, before, "auth.failed")
    assert [(e.actor, e.details["reason"]) for e in failed] == [("visitor", "token expired")]
    assert job_count(net) == jobs


@pytest.mark.parametrize("role", ["researcher", "approver"])
def test_every_admin_rpc_is_permission_denied_to_other_roles_and_audited(net, role):
    users, tokens, projects = (
        net.coordinator.admin.users(),
        net.coordinator.admin.tokens(),
        net.coordinator.store.governance.projects(),
    )
    before = head(net)
    with token_channel(net, net.tokens[role]) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        codes = {}
        for name in ADMIN_ONLY:
            request = getattr(admin_pb2, ADMIN_SERVICE.methods_by_name[name].input_type.name)()
            codes[name] = code_of(getattr(stub, name), request)
    assert codes == dict.fromkeys(ADMIN_ONLY, grpc.StatusCode.PERMISSION_DENIED)
    denied = events(net, before, "access.denied")
    assert sorted(e.details["method"] for e in denied) == ADMIN_ONLY
    assert {(e.actor, e.details["reason"]) for e in denied} == {(role, f"role {role}")}
    # Nothing changed: no person, token or project was added or altered.
    assert net.coordinator.admin.users() == users
    assert net.coordinator.admin.tokens() == tokens
    assert net.coordinator.store.governance.projects() == projects


def test_job_rpcs_check_roles(net):
    before = head(net)
    with token_channel(net, net.tokens["researcher"]) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        assert code_of(stub.ApproveJob, jobs_pb2.ApproveJobRequest(job_id=1)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            code_of(stub.RejectJob, jobs_pb2.RejectJobRequest(job_id=1, reason="x"))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert code_of(stub.GetNetworkStatus, jobs_pb2.GetNetworkStatusRequest()) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    with token_channel(net, net.tokens["approver"]) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        assert code_of(stub.GetNetworkStatus, jobs_pb2.GetNetworkStatusRequest()) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    denied = events(net, before, "access.denied")
    assert [(e.actor, e.details["method"]) for e in denied] == [
        ("researcher", "ApproveJob"),
        ("researcher", "RejectJob"),
        ("researcher", "GetNetworkStatus"),
        ("approver", "GetNetworkStatus"),
    ]


def test_a_node_certificate_holds_no_persons_role(net):
    # An agent's certificate on the mutual-TLS port, without a token, is no admin.
    before = head(net)
    creds = channel_credentials(TlsFiles.from_dir(net.pki / "nodes" / "tre-a"))
    with grpc.secure_channel(net.address, creds) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        assert code_of(stub.ListUsers, admin_pb2.ListUsersRequest()) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        assert code_of(jobs.SubmitJob, submit_request()) == grpc.StatusCode.PERMISSION_DENIED
    denied = events(net, before, "access.denied")
    assert [(e.actor, e.details["method"]) for e in denied] == [
        ("tre-a", "ListUsers"),
        ("tre-a", "SubmitJob"),
    ]


def test_tokens_are_stored_only_as_hashes(net, capsys, tmp_path):
    # Given a token issued through the CLI (written to a file, never printed),
    code, out, err = cli(
        capsys, *admin_args(net, "tokens", "issue", "researcher", "--out", str(tmp_path / "id"))
    )
    assert code == 0
    token = (tmp_path / "id" / "token").read_text().strip()
    TOKENS.add(token)
    assert token not in out + err
    assert (tmp_path / "id" / "token").stat().st_mode & 0o077 == 0
    # then the database holds each token's SHA-256 and never a token itself,
    database = net.directory / "coordinator.sqlite"
    with sqlite3.connect(database) as conn:
        stored = dict(conn.execute("SELECT token_id, token_hash FROM api_tokens"))
    known = {t.split(".")[1]: t for t in TOKENS if t.startswith("ft1.") and t.count(".") == 2}
    issued = {tid: t for tid, t in known.items() if tid in stored}
    assert token.split(".")[1] in issued and len(issued) >= 4
    for token_id, value in issued.items():
        assert stored[token_id] == hashlib.sha256(value.encode()).hexdigest()
    files = [database, *database.parent.glob("coordinator.sqlite-*")]
    raw = b"".join(f.read_bytes() for f in files)
    for value in issued.values():
        secret = value.split(".")[2].encode()
        assert secret not in raw


def test_no_token_appears_in_the_logs_so_far(net):
    # (Every module checks this again at its end, for all it did.)
    assert len(RECORDS) > 50  # the trap works: the network logs, at DEBUG too
    assert any("call refused" in line for line in RECORDS)
    for token in TOKENS:
        assert not any(token in line for line in RECORDS)


def test_a_second_bootstrap_admin_is_refused_and_writes_nothing(net, capsys, tmp_path):
    users, tokens = net.coordinator.admin.users(), net.coordinator.admin.tokens()
    code, out, err = cli(
        capsys, "coordinator", "bootstrap-admin", "mallory", "--out", str(tmp_path / "m"),
        "--tls-dir", str(net.pki / "coordinator"),
        "--database-url", f"sqlite:///{net.directory / 'coordinator.sqlite'}",
    )  # fmt: skip
    assert code == 2 and "already has an admin" in err
    assert not (tmp_path / "m" / "token").exists()
    assert net.coordinator.admin.users() == users
    assert net.coordinator.admin.tokens() == tokens
