"""RefusalGuard on its own: windows, limits and bounded memory, with time moved by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator import refusals
from coordinator.refusals import RefusalGuard, credential_key, peer_host

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PEER = "ipv4:10.0.0.5:41234"


def refuse(guard: RefusalGuard, now: datetime, peer: str = PEER, credential: str = "c") -> bool:
    return guard.refused(
        peer, credential, event="auth.failed", reason="unknown token", actor="", method="M",
        now=now,
    )  # fmt: skip


def test_peer_host_drops_the_port_only():
    assert peer_host("ipv4:10.0.0.5:41234") == "ipv4:10.0.0.5"
    assert peer_host("ipv6:[::1]:5000") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


def test_credential_key_tells_tokens_apart_and_never_holds_them():
    token = "Bearer ft1.0123456789ab.secret-part"
    key = credential_key([("authorization", token)], {})
    assert key != credential_key([("authorization", token + "x")], {})
    assert key != credential_key([], {})
    assert "secret" not in key and "0123456789ab" not in key


def test_the_limit_holds_for_the_window_and_lifts_after_it():
    guard = RefusalGuard(window_s=60, limit=3, audit_burst=1)
    audited = [refuse(guard, T0 + timedelta(seconds=i)) for i in range(3)]
    assert audited == [True, False, False]
    blocked = guard.blocked("ipv4:10.0.0.5:999", "c", "M", T0 + timedelta(seconds=10))
    assert blocked == refusals.Blocked(refusals.REPEATED_CREDENTIALS, 50)
    # Another credential, or another address, is not limited.
    assert guard.blocked(PEER, "other", "M", T0 + timedelta(seconds=10)) is None
    assert guard.blocked("ipv4:10.0.0.6:1", "c", "M", T0 + timedelta(seconds=10)) is None
    # The window ends: one summary for the checked refusals, one for the unchecked one.
    later = T0 + timedelta(seconds=61)
    assert guard.blocked(PEER, "c", "M", later) is None
    summaries = {s.reason: s.count for s in guard.flush(later)}
    assert summaries == {"unknown token": 2, "refused unchecked: credentials refused repeatedly": 1}
    assert guard.flush(later) == []


def test_memory_is_bounded_by_closing_the_window_early(monkeypatch):
    monkeypatch.setattr(refusals, "MAX_TRACKED", 10)
    guard = RefusalGuard(window_s=3600, audit_burst=0)
    for i in range(25):
        refuse(guard, T0, peer=f"ipv4:10.0.{i}.1:1")
    assert len(guard._kinds) <= 10
    assert sum(s.count for s in guard.flush(T0, force=True)) == 25


def test_an_address_refused_too_often_is_capped_except_for_credentials_that_passed():
    # Given a flood from one address that changes its forged secret on every call
    guard = RefusalGuard(window_s=60, limit=3, audit_burst=1, host_limit=5)
    guard.passed(PEER, "colleague", T0)  # a colleague's token worked from there earlier
    for i in range(5):
        assert guard.blocked(PEER, f"forged-{i}", "M", T0) is None
        refuse(guard, T0, credential=f"forged-{i}")

    # Then a new forged secret from that address is refused unchecked,
    now = T0 + timedelta(seconds=1)
    blocked = guard.blocked(PEER, "forged-new", "M", now)
    assert blocked == refusals.Blocked(refusals.FLOODING_ADDRESS, 59)
    # credentials that passed from it are still checked, and other addresses are untouched
    assert guard.blocked(PEER, "colleague", "M", now) is None
    assert guard.blocked("ipv4:10.0.0.6:1", "forged-new", "M", now) is None

    # and the next window starts over, still trusting what passed in the last one
    later = T0 + timedelta(seconds=61)
    assert guard.blocked(PEER, "forged-new", "M", later) is None
    refuse(guard, later, credential="x")
    assert guard.blocked(PEER, "colleague", "M", later) is None
    # the unchecked refusals are counted in the window's summary
    summaries = {s.reason: s.count for s in guard.flush(later)}
    assert summaries[refusals.FLOODING_ADDRESS] == 1


def test_the_trusted_credentials_are_bounded(monkeypatch):
    monkeypatch.setattr(refusals, "MAX_TRUSTED", 10)
    guard = RefusalGuard(window_s=3600)
    for i in range(35):
        guard.passed(PEER, f"c{i}", T0)
    assert len(guard._trusted) <= 10 and len(guard._trusted_before) <= 10
