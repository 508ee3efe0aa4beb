"""A flood of refused calls: limited per peer, audited as counted entries, legitimate calls pass.

Real calls over TLS on loopback: the flood and the legitimate caller share an address,
as they would behind one NAT, so the limit must tell them apart by their credentials.
"""

from __future__ import annotations

import grpc
import pytest
from sectools import OPEN_POLICY, RECORDS, audit_since, code_of, data, head, start, token_channel

from coordinator.refusals import RefusalGuard
from fedtre.testing import LocalNetwork
from fedtre.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2, jobs_pb2_grpc

FLOOD = 120
LIMIT = 5  # refusals of one credential checked in a window, then refused unchecked
AUDIT_BURST = 2  # refusals of one kind audited one by one in a window, then counted


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(data("tre-a"), policy=OPEN_POLICY, directory=tmp_path_factory.mktemp("f"))
    )
    yield network
    network.stop()


@pytest.fixture
def guard(net):
    # A window longer than the test: nothing is flushed until the test says so.
    net.coordinator.auth.guard = RefusalGuard(window_s=3600, limit=LIMIT, audit_burst=AUDIT_BURST)
    return net.coordinator.auth.guard


def flood(net, token: str | None, calls: int = FLOOD) -> set[grpc.StatusCode]:
    with token_channel(net, token) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        return {code_of(stub.ListJobs, jobs_pb2.ListJobsRequest()) for _ in range(calls)}


def legitimate(net) -> grpc.StatusCode:
    with net.channel("researcher") as channel:
        return code_of(jobs_pb2_grpc.JobServiceStub(channel).ListJobs, jobs_pb2.ListJobsRequest())


@pytest.mark.parametrize(
    ("token", "reason"),
    [("ft1.0123456789ab.forged-secret", "unknown token"), (None, "no API token")],
    ids=["forged-token", "no-token"],
)
def test_a_flood_is_refused_limited_and_audited_as_counted_entries(net, guard, token, reason):
    before, logged = head(net), len(RECORDS)

    assert flood(net, token) == {grpc.StatusCode.UNAUTHENTICATED}
    # A legitimate caller from the same address is not limited, during the flood or after.
    assert legitimate(net) == grpc.StatusCode.OK
    assert flood(net, token, 10) == {grpc.StatusCode.UNAUTHENTICATED}
    assert legitimate(net) == grpc.StatusCode.OK

    # Only the first refusals were audited (and logged) one by one,
    during = [e for e in audit_since(net, before) if e.event == "auth.failed"]
    assert [e.details["reason"] for e in during] == [reason] * AUDIT_BURST
    refused_lines = [r for r in RECORDS[logged:] if r.startswith("call refused")]
    assert len(refused_lines) == AUDIT_BURST

    # and when the window ends the rest are one counted entry per kind.
    assert net.coordinator.auth.flush_refusals(force=True) == 2
    after = [e for e in audit_since(net, before) if e.event == "auth.failed"]
    assert len(after) == AUDIT_BURST + 2
    counted = {e.details["reason"]: e.details["count"] for e in after[AUDIT_BURST:]}
    assert counted == {
        reason: LIMIT - AUDIT_BURST,  # refused after checking, until the limit
        "refused unchecked: credentials refused repeatedly": FLOOD + 10 - LIMIT,
    }
    assert sum(counted.values()) + AUDIT_BURST == FLOOD + 10
    assert all(e.details["methods"] == ["ListJobs"] for e in after[AUDIT_BURST:])


def test_a_new_window_checks_the_credentials_again(net, guard):
    assert flood(net, "ft1.0123456789ab.other-secret", LIMIT + 3) == {
        grpc.StatusCode.UNAUTHENTICATED
    }
    assert guard.blocked("ipv4:127.0.0.1:1", "x", "m", net.coordinator.service.clock()) is None
    net.coordinator.auth.flush_refusals(force=True)  # the window ends
    before = head(net)
    assert flood(net, "ft1.0123456789ab.other-secret", 1) == {grpc.StatusCode.UNAUTHENTICATED}
    (entry,) = [e for e in audit_since(net, before) if e.event == "auth.failed"]
    assert entry.details["reason"] == "unknown token"


def test_permission_denied_is_coalesced_but_never_limited(net, guard):
    before = head(net)
    with net.channel("researcher") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        # A researcher may not list users; asked 20 times, refused 20 times as such,
        for _ in range(20):
            code = code_of(admin.ListUsers, admin_pb2.ListUsersRequest())
            assert code == grpc.StatusCode.PERMISSION_DENIED
        # and their own calls still work.
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        assert code_of(stub.ListJobs, jobs_pb2.ListJobsRequest()) == grpc.StatusCode.OK
    net.coordinator.auth.flush_refusals(force=True)
    denied = [e for e in audit_since(net, before) if e.event == "access.denied"]
    assert len(denied) == AUDIT_BURST + 1
    assert denied[-1].details["count"] == 20 - AUDIT_BURST


def test_forged_secrets_on_the_victims_token_id_neither_lock_them_out_nor_grow_the_audit(
    net, guard
):
    """An outsider who knows a researcher's public token id (it is audited) floods from
    the researcher's address with that id and a new forged secret each call, so no one
    credential reaches the limit. Nothing learned or gained: every call is refused, the
    researcher's own token keeps working, and the audit grows by the first AUDIT_BURST
    refusals plus one counted entry, however many calls were made."""
    token_id = net.tokens["researcher"].split(".")[1]
    before = head(net)

    codes = set()
    for i in range(60):
        with token_channel(net, f"ft1.{token_id}.forged-{i}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            codes.add(code_of(stub.ListJobs, jobs_pb2.ListJobsRequest()))
        if i % 20 == 0:
            assert legitimate(net) == grpc.StatusCode.OK

    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    assert legitimate(net) == grpc.StatusCode.OK
    net.coordinator.auth.flush_refusals(force=True)
    refused = [e for e in audit_since(net, before) if e.event == "auth.failed"]
    assert len(refused) == AUDIT_BURST + 1
    assert refused[-1].details["count"] == 60 - AUDIT_BURST


def test_a_flood_of_ever_new_forged_secrets_is_capped_per_address_and_spares_a_known_caller(
    net,
):
    """A flood whose every call carries a new forged token never repeats a credential, so
    the per-credential limit never trips: the address cap refuses its calls unchecked
    once HOST_LIMIT have been refused, while a caller whose token worked from that address
    (the legitimate researcher behind the same NAT) is still served."""
    net.coordinator.auth.guard = RefusalGuard(
        window_s=3600, limit=LIMIT, audit_burst=AUDIT_BURST, host_limit=30
    )
    assert legitimate(net) == grpc.StatusCode.OK  # seen to work from this address
    before = head(net)

    codes = set()
    for i in range(60):
        with token_channel(net, f"ft1.0123456789ab.rotating-{i}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            codes.add(code_of(stub.ListJobs, jobs_pb2.ListJobsRequest()))
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    assert legitimate(net) == grpc.StatusCode.OK

    net.coordinator.auth.flush_refusals(force=True)
    refused = [e for e in audit_since(net, before) if e.event == "auth.failed"]
    counted = {e.details["reason"]: e.details["count"] for e in refused[AUDIT_BURST:]}
    assert counted == {
        "unknown token": 30 - AUDIT_BURST,  # checked, until the address cap
        "refused unchecked: too many refused calls from this address": 30,
    }
