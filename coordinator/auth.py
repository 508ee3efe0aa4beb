"""Who is calling: API tokens for people, network certificates (and the CRL) for agents.

Transport and identity (docs/security.md):

- Agents call AgentService over mutual TLS; the node is the certificate's CN, its role
  the OU. A certificate on the CA's revocation list (crl.pem beside the coordinator's
  certificate, re-read when it changes) is refused on every call, and the streams it
  holds open are closed (coordinator.rpc.agent_servicer).
- People call JobService and AdminService with `authorization: Bearer <token>` metadata
  over TLS: on the coordinator's API port (server-authenticated TLS), or on the agent
  port with a client certificate, which is then optional extra transport security: the
  token alone decides who the caller is.

A token is `ft1.<token id>.<secret>`: 48 random bits of public id (for listing and
revoking) and 256 random bits of secret. The coordinator stores SHA-256 of the whole
token and compares in constant time; it never stores, logs or echoes a token.

Failures are audited (never with the token): UNAUTHENTICATED for a missing, malformed,
unknown, revoked or expired token or a disabled person; PERMISSION_DENIED for a known
caller whose role may not make the call. Under a flood, refusals are limited per peer
and audited as one counted entry per window (coordinator.refusals).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from coordinator.refusals import Blocked, RefusalGuard, Summary, credential_key
from coordinator.store.governance import GovernanceStore
from fedtre.commands import command_for
from fedtre.errors import InvalidRequest, PermissionDenied, Unauthenticated
from fedtre.identity.lifecycle import load_crl
from fedtre.identity.peer import Identity, identity_from_certificate

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "ft1"
TOKEN_METADATA_KEY = "authorization"
# A person's token use is audited as a login at most once per this many seconds.
LOGIN_WINDOW_S = 3600.0
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")

Clock = Callable[[], datetime]


def new_token() -> tuple[str, str]:
    """Return (token id, token): a fresh high-entropy API token and its public id."""
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}.{token_id}.{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """Return the hex SHA-256 the coordinator stores in place of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(token: str) -> str | None:
    """Return the public id of a well-formed token, or None.

    Only an id of the shape new_token gives (12 hex digits) counts: whatever else the
    caller sent may be a secret pasted in the wrong place, and ids are audited.
    """
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[2]:
        return None
    return parts[1] if _TOKEN_ID.fullmatch(parts[1]) else None


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """Return the token of an `authorization: Bearer <token>` header, or None if absent."""
    for key, value in metadata:
        if key.lower() == TOKEN_METADATA_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
    return None


def peer_certificate(auth_context: Mapping[str, Sequence[bytes]]) -> x509.Certificate | None:
    """Return the verified client certificate of a mutual-TLS call, or None."""
    pems = auth_context.get("x509_pem_cert") or ()
    if not pems:
        return None
    try:
        return x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return None


class RevocationList:
    """The CA's revocation list, re-read whenever its file changes.

    A list that cannot be read or is not signed by the network CA is refused: at start-up
    that is an error; later, the last good list stays in force and the error is logged.
    """

    def __init__(self, path: Path, ca_cert: x509.Certificate) -> None:
        self.path = path
        self._ca = ca_cert
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] = frozenset()
        # Counts changes, so a watcher notices one that a call's refresh() picked up first.
        self.generation = 0
        self.refresh(strict=True)

    @classmethod
    def beside(cls, ca_file: Path, crl_file: Path | None = None) -> RevocationList:
        """The list at crl_file (default crl.pem beside the CA certificate)."""
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"cannot read the network CA certificate {ca_file}") from exc
        return cls(crl_file or ca_file.parent / "crl.pem", ca_cert)

    def refresh(self, strict: bool = False) -> bool:
        """Re-read the file if it changed; return whether the list changed."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp == self._stamp:
                return False
            try:
                serials = load_crl(self.path, self._ca)
            except InvalidRequest:
                if strict:
                    raise
                logger.exception("revocation list refused; the previous one stays in force")
                self._stamp = stamp
                return False
            changed = serials != self._serials
            self._stamp, self._serials = stamp, serials
            self.generation += changed
        if changed:
            logger.info("revocation list loaded", extra={"revoked": len(serials)})
        return changed

    def is_revoked(self, serial: int) -> bool:
        self.refresh()
        return serial in self._serials


@dataclass(frozen=True)
class CallInfo:
    """What authentication sees of a call (from the gRPC context, by the rpc layer)."""

    method: str
    peer: str
    metadata: Sequence[tuple[str, str | bytes]]
    auth_context: Mapping[str, Sequence[bytes]]


class Authenticator:
    """Turns a call's credentials into an Identity allowed one of the given roles."""

    def __init__(
        self,
        governance: GovernanceStore,
        revocations: RevocationList | None = None,
        *,
        clock: Clock = lambda: datetime.now(UTC),
        login_window_s: float = LOGIN_WINDOW_S,
        guard: RefusalGuard | None = None,
    ) -> None:
        self._governance = governance
        self.revocations = revocations
        self._clock = clock
        self._login_window_s = login_window_s
        self.guard = guard or RefusalGuard()

    def blocked(self, peer: str, credential: str, method: str) -> Blocked | None:
        """Why and how long a call from peer is refused unchecked (a flood), or None."""
        return self.guard.blocked(peer, credential, method, self._clock())

    def flush_refusals(self, force: bool = False) -> int:
        """Audit the refusals of ended windows, one counted entry per kind; return how many.

        Blocking (writes the database): call it off the event loop.
        """
        summaries = self.guard.flush(self._clock(), force=force)
        for summary in summaries:
            self._audit_summary(summary)
        return len(summaries)

    def _audit_summary(self, summary: Summary) -> None:
        try:
            self._governance.audit(
                actor=summary.actor or "anonymous",
                event=summary.event,
                details=summary.details(),
                now=self._clock(),
            )
        except Exception:
            logger.exception("could not audit repeated refusals", extra={"peer": summary.peer})
        logger.warning(
            "calls refused repeatedly",
            extra={"peer": summary.peer, "reason": summary.reason, "count": summary.count},
        )

    def certificate_revoked(self, cert: x509.Certificate) -> bool:
        return self.revocations is not None and self.revocations.is_revoked(cert.serial_number)

    def node(self, call: CallInfo, roles: Collection[str]) -> tuple[Identity, int]:
        """Return (identity, certificate serial) of a mutual-TLS caller holding one of roles.

        Raises Unauthenticated (no or revoked certificate) or PermissionDenied (role).
        """
        cert = peer_certificate(call.auth_context)
        if cert is None:
            self._refused(call, "", "auth.failed", "no client certificate")
            # The agents' port requires a certificate in the handshake: this is the API port.
            raise Unauthenticated(
                "no client certificate was presented: this is the coordinator's API port, "
                "for people with API tokens; an agent connects to its agent port (--listen, "
                "by default 50051)"
            )
        identity = identity_from_certificate(cert)
        if self.certificate_revoked(cert):
            self._refused(call, identity.name, "auth.failed", "certificate revoked")
            raise Unauthenticated(
                f"the certificate of {identity.role} '{identity.name}' (serial "
                f"{cert.serial_number:x}) is revoked; ask the network admin for a new one"
            )
        self._check_role(call, identity, roles)
        return identity, cert.serial_number

    def person(self, call: CallInfo, roles: Collection[str]) -> Identity:
        """Return the identity of a token-bearing caller holding one of roles.

        Blocking (reads the database): call it off the event loop. Raises
        Unauthenticated or PermissionDenied, having audited the refusal.
        """
        token = bearer_token(call.metadata)
        if token is None:
            cert = peer_certificate(call.auth_context)
            if cert is not None:
                identity = identity_from_certificate(cert)
                if identity.role == "node" and not self.certificate_revoked(cert):
                    self._check_role(call, identity, roles)  # a node never holds a person's role
            self._refused(call, "", "auth.failed", "no API token")
            raise Unauthenticated(
                "no API token was presented; give yours with --token-file FILE or "
                "FEDTRE_TOKEN_FILE (an admin issues one with `fedtre tokens issue`)"
            )
        token_id = token_id_of(token)
        found = self._governance.credential(token_id) if token_id else None
        now = self._clock()
        if found is None or not hmac.compare_digest(found[0], hash_token(token)):
            self._refused(call, "", "auth.failed", "unknown token", token_id)
            raise Unauthenticated(
                "the API token is not valid; check the token file, or ask an admin for a new one"
            )
        _, record, user = found
        problem = ""
        if record.revoked:
            problem = "token revoked"
        elif record.expires_at is not None and now >= record.expires_at:
            problem = "token expired"
        elif user.disabled:
            problem = "user disabled"
        if problem:
            self._refused(call, user.name, "auth.failed", problem, token_id)
            raise Unauthenticated(
                f"the API token {record.token_id} is no longer valid ({problem}); "
                "ask an admin for a new one"
            )
        identity = Identity(name=user.name, role=user.role)
        self.guard.passed(call.peer, credential_key(call.metadata, call.auth_context), now)
        self._check_role(call, identity, roles)
        self._governance.note_login(record.token_id, call.peer, now, self._login_window_s)
        return identity

    def _check_role(self, call: CallInfo, identity: Identity, roles: Collection[str]) -> None:
        if identity.role not in roles:
            self._refused(call, identity.name, "access.denied", f"role {identity.role}")
            raise PermissionDenied(
                f"{command_for(call.method)} needs one of {sorted(roles)}; "
                f"'{identity.name}' has role '{identity.role}'"
            )

    def refused(
        self, call: CallInfo, actor: str, reason: str, subject: str = "", **details: object
    ) -> None:
        """Audit a refusal decided after authentication (e.g. a node reporting another's task)."""
        self._refused(call, actor, "access.denied", reason, None, details, subject)

    def _refused(
        self,
        call: CallInfo,
        actor: str,
        event: str,
        reason: str,
        token_id: str | None = None,
        extra: Mapping[str, object] | None = None,
        subject: str = "",
    ) -> None:
        now = self._clock()
        audit_now = self.guard.refused(
            call.peer,
            credential_key(call.metadata, call.auth_context),
            event=event,
            reason=reason,
            actor=actor,
            method=call.method,
            now=now,
        )
        if not audit_now:
            return  # counted into this window's summary (flush_refusals)
        details: dict[str, object] = {"method": call.method, "reason": reason, "peer": call.peer}
        if token_id:
            details["token_id"] = token_id  # the public half only
        details.update(extra or {})
        try:
            self._governance.audit(
                actor=actor or "anonymous",
                event=event,
                subject=subject,
                details=details,
                now=now,
            )
        except Exception:
            # A refusal stands even if the database cannot record it.
            logger.exception("could not audit a refused call", extra={"method": call.method})
        logger.warning(
            "call refused", extra={"method": call.method, "reason": reason, "actor": actor}
        )
