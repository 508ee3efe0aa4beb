"""Signed approvals: the network's Ed25519 job-signing key and the grants it signs.

When a job is approved, the coordinator signs what was approved; each task it sends
carries a grant (the canonical JSON of one node's part of that approval) and the
grant's signature. The agent verifies the signature with the public key it pinned at
enrolment (`job-signing-pub.pem` in its bundle) and runs only what the grant says.

A grant is bytes, not a structure rebuilt on each side: the agent verifies exactly the
bytes it received and then reads the task from them, so no two implementations of a
canonical form can ever disagree about what was signed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedtre.errors import InvalidRequest
from fedtre.files import write_private

SIGNING_KEY_FILE = "job-signing-key.pem"
VERIFY_KEY_FILE = "job-signing-pub.pem"
GRANT_VERSION = 1

# What one task grant holds; a grant with any other key is not one we wrote.
TASK_GRANT_KEYS = frozenset(
    {"v", "kind", "task_id", "job_id", "node", "project", "analysis", "dataset", "params",
     "expires_at", "approved_by", "approved_at", "key_id"}
)  # fmt: skip
# A grant of a project whose approval starts later also holds "starts_at" (only then, so
# that grants of other projects read as before to agents that predate it).
OPTIONAL_GRANT_KEYS = frozenset({"starts_at"})
JOB_GRANT_KEYS = frozenset(
    {"v", "kind", "job_id", "nodes", "project", "analysis", "dataset", "params", "expires_at",
     "approved_by", "approved_at", "key_id"}
)  # fmt: skip


class GrantError(Exception):
    """A grant is missing, malformed, altered, expired, not yet started or not addressed to
    this node.

    The message is public: the agent reports it to the coordinator as its refusal.
    """


def canonical_json(value: Any) -> bytes:
    """Return value as canonical JSON bytes: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return a short fingerprint of a verification key (16 hex digits of its SHA-256)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def format_time(value: datetime) -> str:
    """Return an aware datetime as the grants' UTC ISO-8601 form (seconds, 'Z')."""
    if value.tzinfo is None:
        raise ValueError("grant times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> datetime:
    """Return the aware datetime of a grant time; raise GrantError when malformed."""
    if not isinstance(text, str):
        raise GrantError("the grant's time is missing")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise GrantError(f"the grant's time {text!r} is malformed") from exc


# -- keys -----------------------------------------------------------------------------


def generate_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Create a new Ed25519 key at path (0600, never overwriting); return it.

    Raises InvalidRequest when path already exists.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InvalidRequest(f"{path} already exists; a signing key is never overwritten") from exc
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(pem)
    return key


def write_verify_key(path: str | os.PathLike[str], key: Ed25519PublicKey) -> None:
    """Write the public half of the signing key as PEM (0600, like every file fedtre writes)."""
    write_private(
        path,
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Return the Ed25519 private key at path; InvalidRequest naming the fix if unusable."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InvalidRequest(
            f"the job-signing key {path} does not exist; `fedtre ca init` writes it into the "
            "coordinator's folder (for an older network: `fedtre ca signing-key DIR`)"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidRequest(f"{path} is not an unencrypted PEM Ed25519 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidRequest(f"{path} is not an Ed25519 private key")
    return key


def load_verify_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Return the Ed25519 public key at path; InvalidRequest naming the fix if unusable."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError as exc:
        raise InvalidRequest(
            f"the network's job-verification key {path} does not exist; it is "
            f"{VERIFY_KEY_FILE} in this node's enrolment bundle"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{path} is not a PEM Ed25519 public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidRequest(f"{path} is not an Ed25519 public key")
    return key


# -- grants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobGrant:
    """What an approval approved: the job's content as it was when approved, signed."""

    job_id: int
    project: str
    analysis: str
    dataset: str
    params: Mapping[str, Any]
    nodes: tuple[str, ...]
    expires_at: datetime
    approved_by: tuple[str, ...]
    approved_at: datetime
    starts_at: datetime | None = None

    def content(self, key: str) -> dict[str, Any]:
        return _with_start(self.starts_at) | {
            "v": GRANT_VERSION,
            "kind": "job",
            "job_id": self.job_id,
            "project": self.project,
            "analysis": self.analysis,
            "dataset": self.dataset,
            "params": dict(self.params),
            "nodes": list(self.nodes),
            "expires_at": format_time(self.expires_at),
            "approved_by": list(self.approved_by),
            "approved_at": format_time(self.approved_at),
            "key_id": key,
        }


@dataclass(frozen=True)
class TaskGrant:
    """One node's part of an approved job: what that node may run, and until when."""

    task_id: str
    job_id: int
    node: str
    project: str
    analysis: str
    dataset: str
    params: Mapping[str, Any]
    expires_at: datetime
    approved_by: tuple[str, ...] = ()
    approved_at: datetime | None = None
    starts_at: datetime | None = None

    def content(self, key: str) -> dict[str, Any]:
        return _with_start(self.starts_at) | {
            "v": GRANT_VERSION,
            "kind": "task",
            "task_id": self.task_id,
            "job_id": self.job_id,
            "node": self.node,
            "project": self.project,
            "analysis": self.analysis,
            "dataset": self.dataset,
            "params": dict(self.params),
            "expires_at": format_time(self.expires_at),
            "approved_by": list(self.approved_by),
            "approved_at": format_time(self.approved_at) if self.approved_at else "",
            "key_id": key,
        }


def _with_start(starts_at: datetime | None) -> dict[str, Any]:
    return {"starts_at": format_time(starts_at)} if starts_at is not None else {}


class Signer:
    """Signs grants with the network's job-signing key (held by the coordinator only)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, grant: JobGrant | TaskGrant) -> tuple[bytes, bytes]:
        """Return (grant bytes, Ed25519 signature over exactly those bytes)."""
        data = canonical_json(grant.content(self.key_id))
        return data, self._key.sign(data)

    def sign_bytes(self, data: bytes) -> bytes:
        """Return the Ed25519 signature over data (signed documents other than grants,
        e.g. audit checkpoints, each with its own "kind" so none passes for another)."""
        return self._key.sign(data)

    def verifier(self) -> Verifier:
        return Verifier(self.public_key)


class Verifier:
    """Checks grants against a pinned verification key."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self.key_id = key_id(public_key)

    def verifies(self, data: bytes, signature: bytes) -> bool:
        """Whether signature is this key's signature over exactly data."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def content(self, data: bytes, signature: bytes, kind: str) -> dict[str, Any]:
        """Return the grant's content once its signature and shape check out.

        Raises GrantError when it is unsigned, signed by another key, altered, or not
        a grant of `kind` ("job" or "task").
        """
        if not data or not signature:
            raise GrantError("the task carries no signed approval; refused")
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            raise GrantError(
                "the task's approval signature does not verify against this node's pinned "
                "network key: it was altered or signed by another key; refused"
            ) from None
        try:
            content = json.loads(data)
        except ValueError as exc:
            raise GrantError("the signed approval is not JSON; refused") from exc
        keys = TASK_GRANT_KEYS if kind == "task" else JOB_GRANT_KEYS
        if not isinstance(content, dict) or set(content) - OPTIONAL_GRANT_KEYS != keys:
            raise GrantError(f"the signed approval is not a {kind} grant; refused")
        if content["v"] != GRANT_VERSION or content["kind"] != kind:
            raise GrantError(f"the signed approval is not a version-{GRANT_VERSION} {kind} grant")
        return content

    def job_grant(self, data: bytes, signature: bytes) -> JobGrant:
        """Return the JobGrant in data; raise GrantError unless it verifies."""
        c = self.content(data, signature, "job")
        return JobGrant(
            job_id=int(c["job_id"]),
            project=str(c["project"]),
            analysis=str(c["analysis"]),
            dataset=str(c["dataset"]),
            params=dict(c["params"]),
            nodes=tuple(c["nodes"]),
            expires_at=parse_time(c["expires_at"]),
            approved_by=tuple(c["approved_by"]),
            approved_at=parse_time(c["approved_at"]),
            starts_at=parse_time(c["starts_at"]) if "starts_at" in c else None,
        )

    def task_grant(self, data: bytes, signature: bytes, *, node: str, now: datetime) -> TaskGrant:
        """Return the TaskGrant in data, checked to be for `node` and unexpired at `now`.

        Raises GrantError (public message) for an unsigned, altered, foreign-key,
        expired or misaddressed grant.
        """
        c = self.content(data, signature, "task")
        if c["node"] != node:
            raise GrantError(
                f"the task was approved for node {c['node']!r}, not this node {node!r}; refused"
            )
        expires = parse_time(c["expires_at"])
        if now >= expires:
            raise GrantError(
                f"the task's approval expired at {c['expires_at']} (the project's approval "
                "lapsed, or the task is a replay); refused"
            )
        starts = parse_time(c["starts_at"]) if "starts_at" in c else None
        if starts is not None and now < starts:
            raise GrantError(
                f"the task's project {c['project']!r} has not started: its data-access "
                f"approval starts at {c['starts_at']}; refused"
            )
        if not isinstance(c["params"], dict):
            raise GrantError("the signed approval's parameters are malformed; refused")
        return TaskGrant(
            task_id=str(c["task_id"]),
            job_id=int(c["job_id"]),
            node=str(c["node"]),
            project=str(c["project"]),
            analysis=str(c["analysis"]),
            dataset=str(c["dataset"]),
            params=dict(c["params"]),
            expires_at=expires,
            approved_by=tuple(c["approved_by"]),
            approved_at=parse_time(c["approved_at"]) if c["approved_at"] else None,
            starts_at=starts,
        )
