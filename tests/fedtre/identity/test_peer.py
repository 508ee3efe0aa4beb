"""Reading a peer's Identity from its certificate and from a gRPC auth context."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedtre.errors import Unauthenticated
from fedtre.identity.ca import NetworkPaths
from fedtre.identity.peer import Identity, identity_from_auth_context, identity_from_pem


def _self_signed(*attributes: x509.NameAttribute) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(list(attributes))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_auth_context_gives_the_certificate_identity(network: NetworkPaths) -> None:
    pem = (network.nodes["tre-c"] / "cert.pem").read_bytes()

    identity = identity_from_auth_context({"x509_pem_cert": [pem]})

    assert identity == Identity("tre-c", "node")


def test_auth_context_without_certificate_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated, match="mutual TLS"):
        identity_from_auth_context({"transport_security_type": [b"insecure"]})


@pytest.mark.parametrize(
    "attributes",
    [
        (x509.NameAttribute(NameOID.COMMON_NAME, "tre-a"),),
        (x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),),
        (
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "superuser"),
            x509.NameAttribute(NameOID.COMMON_NAME, "tre-a"),
        ),
        (
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"),
            x509.NameAttribute(NameOID.COMMON_NAME, "tre-a"),
        ),
    ],
    ids=["no-role", "no-name", "unknown-role", "two-roles"],
)
def test_certificate_without_a_clear_identity_is_unauthenticated(
    attributes: tuple[x509.NameAttribute, ...],
) -> None:
    with pytest.raises(Unauthenticated):
        identity_from_pem(_self_signed(*attributes))


def test_unparseable_certificate_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated, match="could not be parsed"):
        identity_from_pem(b"-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n")
