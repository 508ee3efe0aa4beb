"""Signed provenance of released outputs: which agent released what, from which data.

Each released (or suppressed) output leaves its agent with a statement: the node, task,
job, project, analysis and dataset, the agent's version, the dataset version its TRE's
operator declared, the outcome, the SHA-256 of the payload and the SHA-256 of the
disclosure rules applied to it, as the researcher sees them (release.public_rules: each
rule family, its verdict and its fixed words), so the record of every check is bound to
the output it describes (SATRE 3.3.09). The agent signs it with
its certificate's private key (ECDSA, SHA-256) and sends the certificate along. Anyone
with the network CA certificate can then check, long after, that a published number is
the output that agent released (`verify`): no coordinator can alter it unnoticed.

The payload digest is taken over the payload as JSON with every number a float, because
the wire (google.protobuf.Struct) carries every number as a double: the agent and a
client reading the result through the coordinator then hash the same text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedtre.identity.peer import identity_from_certificate
from fedtre.identity.signing import canonical_json

# Version 2 adds rules_sha256 and params_sha256 (the parameters the task ran with, as
# approved); a version 1 statement (an older agent's) still verifies,
# with rules_signed False: its rules are not bound to it.
STATEMENT_VERSION = 2
_V1_KEYS = frozenset(
    {"v", "kind", "node", "task_id", "job_id", "project", "analysis", "dataset",
     "dataset_version", "agent_version", "outcome", "payload_sha256"}
)  # fmt: skip
STATEMENT_KEYS = _V1_KEYS | {"rules_sha256", "params_sha256"}


class ProvenanceError(Exception):
    """A result's provenance is missing, malformed, not signed by its node, or not its own."""


def payload_digest(payload: Mapping[str, Any]) -> str:
    """Return the hex SHA-256 of payload as the wire carries it (every number a float)."""
    plain = json.loads(json.dumps(dict(payload), allow_nan=False), parse_int=float)
    return hashlib.sha256(canonical_json(plain)).hexdigest()


def rules_digest(rules: Iterable[Any]) -> str:
    """Return the hex SHA-256 of rules (each with .rule, .passed, .detail, .setting), in order."""
    plain = [[str(r.rule), bool(r.passed), str(r.detail), str(r.setting)] for r in rules]
    return hashlib.sha256(canonical_json({"rules": plain})).hexdigest()


@dataclass(frozen=True)
class Provenance:
    """A signed statement about one released output, and the certificate that signed it."""

    agent_version: str
    dataset_version: str
    statement: bytes
    signature: bytes
    certificate: bytes


@dataclass(frozen=True)
class Statement:
    """What a verified provenance says."""

    node: str
    task_id: str
    job_id: int
    project: str
    analysis: str
    dataset: str
    dataset_version: str
    agent_version: str
    outcome: str
    payload_sha256: str
    # True when the statement covers the rules and parameters (version 2).
    rules_signed: bool = False
    params_sha256: str = ""


def sign(
    key: ec.EllipticCurvePrivateKey,
    certificate: bytes,
    *,
    node: str,
    task_id: str,
    job_id: int,
    project: str,
    analysis: str,
    dataset: str,
    dataset_version: str,
    agent_version: str,
    outcome: str,
    payload: Mapping[str, Any],
    rules: Iterable[Any],
    params: Mapping[str, Any],
) -> Provenance:
    """Return the provenance of one output, signed with the agent's certificate key.

    rules: the disclosure rules as the researcher receives them (release.public_rules);
    params: the task's parameters as approved.
    """
    statement = canonical_json(
        {
            "v": STATEMENT_VERSION,
            "kind": "result",
            "node": node,
            "task_id": task_id,
            "job_id": job_id,
            "project": project,
            "analysis": analysis,
            "dataset": dataset,
            "dataset_version": dataset_version,
            "agent_version": agent_version,
            "outcome": outcome,
            "payload_sha256": payload_digest(payload),
            "rules_sha256": rules_digest(rules),
            "params_sha256": payload_digest(params),
        }
    )
    signature = key.sign(statement, ec.ECDSA(hashes.SHA256()))
    return Provenance(agent_version, dataset_version, statement, signature, certificate)


def verify(
    provenance: Provenance | None,
    ca_certificate: bytes,
    *,
    node: str,
    task_id: str,
    payload: Mapping[str, Any],
    rules: Iterable[Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Statement:
    """Return the statement of a result's provenance, checked end to end.

    Checks that the certificate was issued by the network CA to node, that it signed the
    statement, and that the statement is about this task and exactly this payload, and,
    when rules (or params) are given and the statement covers them, exactly these.
    Raises ProvenanceError saying what does not hold.
    """
    if provenance is None or not provenance.statement or not provenance.signature:
        raise ProvenanceError(f"the result of node {node!r} carries no signed provenance")
    try:
        ca = x509.load_pem_x509_certificate(ca_certificate)
        cert = x509.load_pem_x509_certificate(provenance.certificate)
    except ValueError as exc:
        raise ProvenanceError("a certificate in the provenance is not PEM") from exc
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ProvenanceError(
            "the signing certificate was not issued by this network's CA"
        ) from exc
    identity = identity_from_certificate(cert)
    if (identity.role, identity.name) != ("node", node):
        raise ProvenanceError(
            f"the result was signed by {identity.role} {identity.name!r}, not node {node!r}"
        )
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ProvenanceError("the signing certificate does not hold an EC key")
    try:
        public_key.verify(provenance.signature, provenance.statement, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ProvenanceError(
            f"node {node!r}: its signature does not match its statement: altered after release"
        ) from None
    try:
        content = json.loads(provenance.statement)
    except ValueError as exc:
        raise ProvenanceError("the signed statement is not JSON") from exc
    if not isinstance(content, dict) or set(content) not in (_V1_KEYS, STATEMENT_KEYS):
        raise ProvenanceError("the signed statement is not a result statement")
    version = 1 if set(content) == _V1_KEYS else STATEMENT_VERSION
    if content["v"] != version or content["kind"] != "result":
        raise ProvenanceError("the signed statement is of an unknown version")
    if content["node"] != node or content["task_id"] != task_id:
        raise ProvenanceError(
            f"the signed statement is about task {content['task_id']!r} of node "
            f"{content['node']!r}, not this one"
        )
    if content["payload_sha256"] != payload_digest(payload):
        raise ProvenanceError(f"the output differs from what node {node!r} released and signed")
    rules_signed = version >= 2
    if rules is not None and rules_signed and content["rules_sha256"] != rules_digest(rules):
        raise ProvenanceError(
            f"the disclosure checks shown differ from those node {node!r} applied and signed"
        )
    if params is not None and rules_signed and content["params_sha256"] != payload_digest(params):
        raise ProvenanceError(f"the parameters shown differ from those node {node!r} ran with")
    if (content["agent_version"], content["dataset_version"]) != (
        provenance.agent_version,
        provenance.dataset_version,
    ):
        raise ProvenanceError("the versions shown differ from the signed ones")
    return Statement(
        node=content["node"],
        task_id=content["task_id"],
        job_id=int(content["job_id"]),
        project=str(content["project"]),
        analysis=str(content["analysis"]),
        dataset=str(content["dataset"]),
        dataset_version=str(content["dataset_version"]),
        agent_version=str(content["agent_version"]),
        outcome=str(content["outcome"]),
        payload_sha256=str(content["payload_sha256"]),
        rules_signed=rules_signed,
        params_sha256=str(content.get("params_sha256", "")),
    )


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Return the agent's EC private key from PEM; ProvenanceError if it is not one."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvenanceError("the agent's key is not an EC private key")
    return key
