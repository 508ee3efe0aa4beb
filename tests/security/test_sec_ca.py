"""`fedtre ca init|issue-node|revoke`: enrolment bundles hold one node's secrets, nobody else's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sectools import TOKENS, cli

from fedtre.identity.lifecycle import load_crl
from fedtre.identity.peer import identity_from_certificate

BUNDLE = {"ca.pem", "cert.pem", "key.pem", "job-signing-pub.pem"}


@pytest.fixture(autouse=True)
def _no_tokens_here():
    TOKENS.add("ft1.none.none")  # this module issues no tokens; the log check still runs


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def network(tmp_path, capsys) -> Path:
    root = tmp_path / "net"
    code, out, _ = cli(capsys, "ca", "init", str(root), "--nodes", "tre-a,tre-b")
    assert code == 0 and "Created a fedtre network" in out
    return root


def test_init_writes_the_ca_the_coordinator_and_each_nodes_bundle(network):
    assert {p.name for p in (network / "nodes" / "tre-a").iterdir()} == BUNDLE
    signing = network / "coordinator" / "job-signing-key.pem"
    for secret in (signing, network / "ca" / "ca.key", network / "nodes" / "tre-a" / "key.pem"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    public = serialization.load_pem_private_key(signing.read_bytes(), None).public_key()
    pinned = serialization.load_pem_public_key(
        (network / "nodes" / "tre-b" / "job-signing-pub.pem").read_bytes()
    )
    assert public == pinned


def test_issue_node_writes_only_that_nodes_bundle(network, capsys):
    before = tree(network)
    code, out, _ = cli(capsys, "ca", "issue-node", str(network), "tre-c")
    assert code == 0 and "Hand this folder, and nothing else" in out
    after = tree(network)
    # Nothing that existed changed; only tre-c's four files are new.
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {f"nodes/tre-c/{name}" for name in BUNDLE}
    bundle = network / "nodes" / "tre-c"
    cert = x509.load_pem_x509_certificate((bundle / "cert.pem").read_bytes())
    identity = identity_from_certificate(cert)
    assert (identity.name, identity.role) == ("tre-c", "node")
    ca = x509.load_pem_x509_certificate((network / "ca" / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    # The bundle holds its own key and public material only: no other node's key, no
    # CA key, no job-signing key.
    private = [p for p in bundle.iterdir() if b"PRIVATE KEY" in p.read_bytes()]
    assert private == [bundle / "key.pem"]
    others = [
        network / "nodes" / "tre-a" / "key.pem",
        network / "ca" / "ca.key",
        network / "coordinator" / "job-signing-key.pem",
        network / "coordinator" / "key.pem",
    ]
    assert (bundle / "key.pem").read_bytes() not in {p.read_bytes() for p in others}
    assert (bundle / "job-signing-pub.pem").read_bytes() == (
        network / "ca" / "job-signing-pub.pem"
    ).read_bytes()


def test_issuing_a_taken_name_changes_nothing(network, capsys):
    before = tree(network)
    code, _, err = cli(capsys, "ca", "issue-node", str(network), "tre-a")
    assert code == 2 and "already exists" in err
    assert tree(network) == before


def test_revoke_lists_the_nodes_certificate_in_the_signed_crl(network, capsys):
    before = tree(network / "nodes")
    code, out, _ = cli(capsys, "ca", "revoke", str(network), "tre-a")
    assert code == 0
    ca = x509.load_pem_x509_certificate((network / "ca" / "ca.pem").read_bytes())
    serial = x509.load_pem_x509_certificate(
        (network / "nodes" / "tre-a" / "cert.pem").read_bytes()
    ).serial_number
    other = x509.load_pem_x509_certificate(
        (network / "nodes" / "tre-b" / "cert.pem").read_bytes()
    ).serial_number
    for crl in (network / "ca" / "crl.pem", network / "coordinator" / "crl.pem"):
        assert str(crl) in out
        assert load_crl(crl, ca) == {serial}
    assert other != serial
    assert tree(network / "nodes") == before  # no bundle was touched
