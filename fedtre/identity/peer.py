"""Who is on the other end of a connection: the identity carried in a network certificate."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from fedtre.errors import Unauthenticated

# The role is the certificate's OU; the coordinator authorises on it, so a certificate
# with any other OU is treated as no identity at all.
ROLES: tuple[str, ...] = ("coordinator", "node", "admin", "researcher")
USER_ROLES: tuple[str, ...] = ("admin", "researcher")

# Names end up in paths, audit records and metric labels, so they are kept to a safe,
# lower-case alphabet (a DNS label, which node ids often are anyway).
NAME_RULE = "lower-case letters, digits and '-', starting with a letter or digit, at most 63"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Identity:
    """A verified caller: its name (node id or user name) and its role."""

    name: str
    role: str


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """Return the Identity named by a certificate's subject CN and OU.

    Raises Unauthenticated if either is missing, repeated or the role is unknown.
    """
    name = _single(cert.subject, NameOID.COMMON_NAME, "common name (CN)")
    role = _single(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "role (OU)")
    if role not in ROLES:
        raise Unauthenticated(
            f"certificate role {role!r} is not one of {', '.join(ROLES)}; "
            "use a certificate issued by `fedtre ca init`"
        )
    return Identity(name=name, role=role)


def identity_from_pem(pem: bytes) -> Identity:
    """Return the Identity of a PEM certificate; raises Unauthenticated if it has none."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Unauthenticated("the peer certificate could not be parsed") from exc
    return identity_from_certificate(cert)


def identity_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
    """Return the Identity of a gRPC peer from `context.auth_context()`.

    Raises Unauthenticated when the connection carried no client certificate.
    """
    pems = auth_context.get("x509_pem_cert") or ()
    if not pems:
        raise Unauthenticated("no client certificate was presented; connect with mutual TLS")
    return identity_from_pem(pems[0])


def _single(name: x509.Name, oid: x509.ObjectIdentifier, what: str) -> str:
    attributes = name.get_attributes_for_oid(oid)
    if len(attributes) != 1 or not attributes[0].value:
        raise Unauthenticated(f"the certificate must carry exactly one {what}")
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
