"""Refused calls under a flood: limited per peer, and audited as one counted entry per window.

Without this, every refused call cost a database lookup, a hash-chained audit row (the
write lock, shared with every legitimate call) and a log line: 3,500 refused calls in
10 s slowed a legitimate call fifty-fold and grew the audit log without bound.

- Limit. Once a peer (its address, without the port) has had `limit` calls refused as
  UNAUTHENTICATED with the same credentials (the same token, certificate or none) within
  a window, further calls carrying them are refused at once, by the interceptor, with no
  database work, until the window ends. Other credentials from the same address (a
  colleague behind the same NAT, the same user's corrected token) are unaffected.
  PERMISSION_DENIED refusals are coalesced but never limited: the caller is known and
  the same credentials may make other calls.
- Address cap. A flood that changes its forged secret on every call never repeats a
  credential, so the limit above never trips. Once a peer has had `host_limit` calls
  refused as UNAUTHENTICATED in a window, whatever their credentials, its calls are
  refused at once unless they carry credentials that passed from that address recently
  (this window or the last). A colleague behind the same NAT who has not called for a
  window waits for it to end, at most `window` seconds: the price of the cap.
- Coalesce. The first `audit_burst` refusals of a kind in a window are audited and
  logged one by one, as before; the rest of that window are counted, and when the window
  ends `flush` returns one summary per kind, audited as a single entry with the count.
  A kind is (peer, event, reason), and the method too for PERMISSION_DENIED; reasons
  are a fixed set, so the audit log grows by a bounded number of entries per peer and
  window however many calls are refused.

Thread-safe; time comes from the caller (the Authenticator's clock), so tests move it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

WINDOW_S = 60.0
LIMIT = 10
HOST_LIMIT = 200
AUDIT_BURST = 20
# Kinds tracked at most; a flood from more distinct peers than this starts a new window
# early (the summaries so far are flushed first), so memory stays bounded.
MAX_TRACKED = 10_000
# Credentials remembered as having passed at most (a new window starts over when full).
MAX_TRUSTED = 10_000
# Methods listed in one summary at most (the method label is bounded anyway).
MAX_METHODS = 20


def peer_host(peer: str) -> str:
    """Return a gRPC peer string without its port: 'ipv4:10.0.0.5:41234' -> 'ipv4:10.0.0.5'."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def credential_key(
    metadata: Sequence[tuple[str, str | bytes]], auth_context: Mapping[str, Sequence[bytes]]
) -> str:
    """Return a digest naming the credentials a call presents (never the credentials).

    The authorization header and the client certificate, hashed together: the same token
    (or none) from the same certificate (or none) gives the same key.
    """
    digest = hashlib.sha256()
    for key, value in metadata:
        if key.lower() == "authorization":
            digest.update(value if isinstance(value, bytes) else value.encode())
    digest.update(b"\0")
    for pem in auth_context.get("x509_pem_cert") or ():
        digest.update(pem)
    return digest.hexdigest()[:32]


@dataclass
class _Kind:
    """Refusals of one kind (peer, event, reason) in the current window."""

    actor: str
    first_at: datetime
    audited: int = 0
    count: int = 0
    methods: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Summary:
    """The refusals of one kind in an ended window that were not audited one by one."""

    peer: str
    event: str
    reason: str
    actor: str
    count: int
    methods: tuple[str, ...]
    since: datetime
    until: datetime

    def details(self) -> dict[str, object]:
        return {
            "peer": self.peer,
            "reason": self.reason,
            "count": self.count,
            "methods": list(self.methods),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
        }


@dataclass(frozen=True)
class Blocked:
    """A call refused unchecked: why (a fixed reason) and the seconds until it is checked."""

    reason: str
    seconds: float


REPEATED_CREDENTIALS = "refused unchecked: credentials refused repeatedly"
FLOODING_ADDRESS = "refused unchecked: too many refused calls from this address"


class RefusalGuard:
    """Counts refusals per peer; says which to audit and which credentials to refuse early."""

    def __init__(
        self,
        window_s: float = WINDOW_S,
        limit: int = LIMIT,
        audit_burst: int = AUDIT_BURST,
        host_limit: int = HOST_LIMIT,
    ) -> None:
        self.window = timedelta(seconds=window_s)
        self.limit = limit
        self.audit_burst = audit_burst
        self.host_limit = host_limit
        self._lock = threading.Lock()
        self._started: datetime | None = None
        self._kinds: dict[tuple[str, str, str, str], _Kind] = {}
        self._strikes: dict[tuple[str, str], int] = {}
        self._host_strikes: dict[str, int] = {}
        # (host, credential) that passed in this window, and in the one before
        self._trusted: set[tuple[str, str]] = set()
        self._trusted_before: set[tuple[str, str]] = set()
        self._pending: list[Summary] = []

    def blocked(self, peer: str, credential: str, method: str, now: datetime) -> Blocked | None:
        """Return why and for how long a call is refused at once, or None to check it.

        A call refused here is counted into the window's summary (event auth.failed).
        """
        host = peer_host(peer)
        key = (host, credential)
        with self._lock:
            self._roll(now)
            if self._strikes.get(key, 0) >= self.limit:
                reason = REPEATED_CREDENTIALS
            elif self._host_strikes.get(host, 0) >= self.host_limit and not (
                key in self._trusted or key in self._trusted_before
            ):
                reason = FLOODING_ADDRESS
            else:
                return None
            self._count(host, "auth.failed", reason, "", method, now, audited=False)
            assert self._started is not None
            return Blocked(reason, max(0.0, (self._started + self.window - now).total_seconds()))

    def passed(self, peer: str, credential: str, now: datetime) -> None:
        """Remember that these credentials authenticated from peer (the address cap spares them)."""
        key = (peer_host(peer), credential)
        with self._lock:
            self._roll(now)
            if key not in self._trusted:
                if len(self._trusted) >= MAX_TRUSTED:
                    self._trusted_before, self._trusted = self._trusted, set()
                self._trusted.add(key)

    def refused(
        self,
        peer: str,
        credential: str,
        *,
        event: str,
        reason: str,
        actor: str,
        method: str,
        now: datetime,
    ) -> bool:
        """Count one refusal; return True if it is among the first `audit_burst` of its kind
        in the window (audit and log it now), False if it is coalesced into the summary."""
        host = peer_host(peer)
        with self._lock:
            self._roll(now)
            if event == "auth.failed":
                key = (host, credential)
                self._strikes[key] = self._strikes.get(key, 0) + 1
                self._host_strikes[host] = self._host_strikes.get(host, 0) + 1
            return self._count(host, event, reason, actor, method, now)

    def flush(self, now: datetime, force: bool = False) -> list[Summary]:
        """Return the summaries of ended windows (all of them when force) and forget them."""
        with self._lock:
            self._roll(now, force=force)
            done, self._pending = self._pending, []
            return done

    def _count(
        self,
        host: str,
        event: str,
        reason: str,
        actor: str,
        method: str,
        now: datetime,
        audited: bool = True,
    ) -> bool:
        """Count a refusal; return whether it is audited on its own (within the burst).

        Refusals audited on their own are left out of the summary's count.
        """
        if len(self._kinds) >= MAX_TRACKED:
            self._roll(now, force=True)
        # A known caller's denials are told apart by method: each may be a different mistake.
        key = (host, event, reason, method if event == "access.denied" else "")
        kind = self._kinds.setdefault(key, _Kind(actor, now))
        if audited and kind.audited < self.audit_burst:
            kind.audited += 1
            return True
        kind.count += 1
        if len(kind.methods) < MAX_METHODS:
            kind.methods.add(method)
        return False

    def _roll(self, now: datetime, force: bool = False) -> None:
        """Close the current window if it has ended (or when force): queue its summaries."""
        if self._started is not None and (force or now >= self._started + self.window):
            self._pending += [
                Summary(
                    host, event, reason, k.actor, k.count, tuple(sorted(k.methods)), k.first_at, now
                )  # fmt: skip
                for (host, event, reason, _), k in self._kinds.items()
                if k.count
            ]
            self._kinds.clear()
            self._strikes.clear()
            self._host_strikes.clear()
            self._trusted_before, self._trusted = self._trusted, set()
            self._started = None
        if self._started is None:
            self._started = now
