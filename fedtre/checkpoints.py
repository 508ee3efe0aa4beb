"""Signed audit checkpoints, in the manner of Certificate Transparency's signed tree heads.

A checkpoint says "the coordinator's audit log held `size` entries, the last with hash
`head`, at time `at`". The coordinator signs it with the network's job-signing key (the
key agents already pin, fedtre.identity.signing) and sends it down each agent's task
stream; each agent checks the signature, compares it with the checkpoints it has seen
(kept in its state database), and countersigns it with its node key (its certificate's
ECDSA key, as it signs released outputs) unless it is a rollback: fewer entries than
one seen before, or the same number with another head.

Because each entry's hash covers every entry before it, a checkpoint fixes the whole
prefix: a log cut short and given an earlier head, or rewritten with every hash
recomputed, no longer matches a checkpoint taken before (fedtre.audit.check_against).
The database's writer cannot forge a checkpoint without the signing key, and cannot
make the agents forget the ones they countersigned.

A checkpoint file (`fedtre audit checkpoint --out FILE`) is JSON: the signed bytes, the
coordinator's signature and the agents' countersignatures, each with its certificate.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedtre.audit import AuditEntry
from fedtre.errors import InvalidRequest
from fedtre.files import write_private
from fedtre.identity.peer import identity_from_certificate
from fedtre.identity.signing import Signer, Verifier, canonical_json

CHECKPOINT_VERSION = 1
KIND = "audit-checkpoint"
# The coordinator's audit events for a checkpoint published and one countersigned.
PUBLISHED = "audit.checkpoint"
COUNTERSIGNED = "audit.countersigned"
COORDINATOR_LOG = "coordinator"
_KEYS = frozenset({"v", "kind", "log", "size", "head", "at", "key_id"})


class CheckpointError(InvalidRequest):
    """A checkpoint is malformed, not signed by the network's key, or a rollback.

    The message is public.
    """


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint says: the log held size entries, the last with hash head."""

    size: int
    head: str
    at: str
    log: str = COORDINATOR_LOG

    def rolls_back(self, seen: Checkpoint) -> bool:
        """Whether this contradicts seen: fewer entries, or as many with another head."""
        return self.size < seen.size or (self.size == seen.size and self.head != seen.head)


@dataclass(frozen=True)
class Countersignature:
    node: str
    signature: bytes
    certificate: bytes  # PEM


@dataclass(frozen=True)
class SignedCheckpoint:
    """The signed bytes of a checkpoint, the coordinator's signature and countersignatures."""

    data: bytes
    signature: bytes
    countersignatures: tuple[Countersignature, ...] = ()

    def verified(self, verifier: Verifier) -> Checkpoint:
        """Return the checkpoint once the network key's signature checks out.

        Raises CheckpointError when unsigned, signed by another key, or malformed.
        """
        if not verifier.verifies(self.data, self.signature):
            raise CheckpointError(
                "the checkpoint's signature does not verify against the network's "
                "job-signing key: it was altered or signed by another key"
            )
        return parse(self.data)

    def countersigned_by(self, ca: x509.Certificate | None = None) -> list[str]:
        """Return the nodes whose countersignature verifies (against their certificate,
        itself checked to be issued by ca when given); raise CheckpointError on any bad one."""
        nodes = []
        for counter in self.countersignatures:
            node = check_countersignature(self.data, counter, ca)
            nodes.append(node)
        return nodes


def sign(signer: Signer, checkpoint: Checkpoint) -> SignedCheckpoint:
    """Return checkpoint signed with the network's job-signing key."""
    content = {
        "v": CHECKPOINT_VERSION,
        "kind": KIND,
        "log": checkpoint.log,
        "size": checkpoint.size,
        "head": checkpoint.head,
        "at": checkpoint.at,
        "key_id": signer.key_id,
    }
    data = canonical_json(content)
    return SignedCheckpoint(data, signer.sign_bytes(data))


def parse(data: bytes) -> Checkpoint:
    """Return the checkpoint in data (not checking any signature); CheckpointError if malformed."""
    try:
        content = json.loads(data)
    except ValueError as exc:
        raise CheckpointError("the checkpoint is not JSON") from exc
    if not isinstance(content, dict) or set(content) != _KEYS or content["kind"] != KIND:
        raise CheckpointError("the signed bytes are not an audit checkpoint")
    if content["v"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"the checkpoint is not version {CHECKPOINT_VERSION}")
    size, head = content["size"], content["head"]
    if not isinstance(size, int) or size < 0 or not isinstance(head, str) or len(head) != 64:
        raise CheckpointError("the checkpoint's size or head is malformed")
    return Checkpoint(size, head, str(content["at"]), str(content["log"]))


def at_now(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


# -- countersignatures (the agents' node keys) ----------------------------------------


def countersign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Return a node's ECDSA-SHA256 countersignature over a checkpoint's signed bytes."""
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def check_countersignature(
    data: bytes, counter: Countersignature, ca: x509.Certificate | None = None
) -> str:
    """Return the node that countersigned data; raise CheckpointError unless it verifies."""
    try:
        cert = x509.load_pem_x509_certificate(counter.certificate)
    except ValueError as exc:
        raise CheckpointError(
            f"the countersignature of {counter.node!r} has no certificate"
        ) from exc
    identity = identity_from_certificate(cert)
    if identity.role != "node" or identity.name != counter.node:
        raise CheckpointError(
            f"the countersignature of {counter.node!r} carries the certificate of "
            f"{identity.role} {identity.name!r}"
        )
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CheckpointError(f"the certificate of {counter.node!r} holds no ECDSA key")
    try:
        public_key.verify(counter.signature, data, ec.ECDSA(hashes.SHA256()))
        if ca is not None:
            cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"the countersignature of {counter.node!r} does not verify (or its certificate "
            "is not issued by the network CA)"
        ) from exc
    return identity.name


# -- as audit entries -----------------------------------------------------------------


def published_details(signed: SignedCheckpoint) -> dict[str, Any]:
    """The details of the audit.checkpoint entry recording signed."""
    checkpoint = parse(signed.data)
    return {
        "size": checkpoint.size,
        "head": checkpoint.head,
        "checkpoint": signed.data.decode("ascii"),
        "signature": _b64(signed.signature),
    }


def countersigned_details(data: bytes, counter: Countersignature) -> dict[str, Any]:
    """The details of the audit.countersigned entry recording counter."""
    checkpoint = parse(data)
    return {
        "size": checkpoint.size,
        "head": checkpoint.head,
        "signature": _b64(counter.signature),
        "certificate": counter.certificate.decode("ascii"),
    }


def from_entries(published: AuditEntry, countersigned: Iterable[AuditEntry]) -> SignedCheckpoint:
    """Return the checkpoint an audit.checkpoint entry recorded, with the countersignatures
    of the audit.countersigned entries that match it."""
    try:
        data = str(published.details["checkpoint"]).encode("ascii")
        checkpoint = parse(data)
        # One per node (its latest), in node order, whatever order they arrived in.
        by_node = {
            e.actor: Countersignature(
                e.actor, _unb64(e.details["signature"]), str(e.details["certificate"]).encode()
            )
            for e in countersigned
            if e.event == COUNTERSIGNED
            and (e.details.get("size"), e.details.get("head")) == (checkpoint.size, checkpoint.head)
        }
        counters = tuple(by_node[node] for node in sorted(by_node))
        return SignedCheckpoint(data, _unb64(published.details["signature"]), counters)
    except (KeyError, UnicodeEncodeError, binascii.Error) as exc:
        raise CheckpointError(f"audit entry {published.seq} is not a recorded checkpoint") from exc


def latest_in(entries: Iterable[Mapping[str, Any]]) -> SignedCheckpoint | None:
    """Return the newest checkpoint recorded in exported audit entries (dicts), with its
    countersignatures; None when there is none."""
    published: AuditEntry | None = None
    counters: list[AuditEntry] = []
    for value in entries:
        entry = AuditEntry(**value)
        if entry.event == PUBLISHED:
            published, counters = entry, []
        elif entry.event == COUNTERSIGNED:
            counters.append(entry)
    return None if published is None else from_entries(published, counters)


# -- files ----------------------------------------------------------------------------


def to_json(signed: SignedCheckpoint) -> dict[str, Any]:
    return {
        "checkpoint": signed.data.decode("ascii"),
        "signature": _b64(signed.signature),
        "countersignatures": [
            {"node": c.node, "signature": _b64(c.signature), "certificate": c.certificate.decode()}
            for c in signed.countersignatures
        ],
    }


def from_json(value: Any) -> SignedCheckpoint:
    """Return the SignedCheckpoint of a checkpoint file's JSON; CheckpointError if malformed."""
    try:
        return SignedCheckpoint(
            str(value["checkpoint"]).encode("ascii"),
            _unb64(value["signature"]),
            tuple(
                Countersignature(
                    str(c["node"]), _unb64(c["signature"]), str(c["certificate"]).encode()
                )
                for c in value.get("countersignatures", [])
            ),
        )
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError, binascii.Error) as exc:
        raise CheckpointError(
            "not a checkpoint file: write one with `fedtre audit checkpoint --out FILE`"
        ) from exc


def write_file(path: str | os.PathLike[str], signed: SignedCheckpoint) -> None:
    """Write a checkpoint file (0600)."""
    write_private(path, json.dumps(to_json(signed), indent=2) + "\n")


def read_file(path: str | os.PathLike[str]) -> SignedCheckpoint:
    """Return the checkpoint in a file; InvalidRequest when unreadable or malformed."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except OSError as exc:
        raise InvalidRequest(f"cannot read the checkpoint file {path} ({exc.strerror})") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a checkpoint file (not JSON)") from exc
    return from_json(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    return base64.b64decode(str(text), validate=True)
