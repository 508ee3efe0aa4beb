"""Checkpoints on their own: signatures, rollbacks, and a log checked against a prefix."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedtre import audit, checkpoints
from fedtre.checkpoints import Checkpoint, CheckpointError, Countersignature
from fedtre.identity import provenance
from fedtre.identity.signing import Signer, Verifier


@pytest.fixture
def log(tmp_path):
    metadata = sa.MetaData()
    tables = audit.audit_tables(metadata)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'log.sqlite'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for i in range(10):
            audit.append(conn, tables, actor="a", event="e", details={"i": i})
    yield engine, tables
    engine.dispose()


def test_a_log_holds_its_prefix_until_rolled_back_or_rewritten(log):
    engine, tables = log
    with engine.begin() as conn:
        size, head = audit.head(conn, tables)
        assert audit.check_against(conn, tables, size, head).ok
        audit.append(conn, tables, actor="a", event="later")
        # Growing keeps the prefix.
        assert audit.check_against(conn, tables, size, head).ok
        assert audit.check_against(conn, tables, 0, audit.GENESIS).ok
        # A checkpoint of more entries than the log holds is a rollback,
        report = audit.check_against(conn, tables, size + 5, head)
        assert not report.ok and "rolled back" in report.problem
        # and a head the prefix no longer has is a rewrite.
        report = audit.check_against(conn, tables, size, "f" * 64)
        assert not report.ok and "rewritten" in report.problem


def test_signed_checkpoints_verify_and_altered_ones_do_not():
    signer = Signer(Ed25519PrivateKey.generate())
    signed = checkpoints.sign(signer, Checkpoint(7, "a" * 64, "2026-12-06T00:00:00+00:00"))
    assert signed.verified(signer.verifier()) == Checkpoint(
        7, "a" * 64, "2026-12-06T00:00:00+00:00"
    )
    other = Verifier(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(CheckpointError, match="does not verify"):
        signed.verified(other)
    altered = checkpoints.SignedCheckpoint(
        signed.data.replace(b'"size":7', b'"size":3'), signed.signature
    )
    with pytest.raises(CheckpointError, match="does not verify"):
        altered.verified(signer.verifier())
    # A grant signed by the same key is no checkpoint.
    with pytest.raises(CheckpointError, match="not an audit checkpoint"):
        checkpoints.parse(b'{"kind":"task","v":1}')


def test_a_rollback_is_fewer_entries_or_another_head_for_as_many():
    seen = Checkpoint(10, "a" * 64, "t")
    assert Checkpoint(9, "b" * 64, "t").rolls_back(seen)
    assert Checkpoint(10, "b" * 64, "t").rolls_back(seen)
    assert not Checkpoint(10, "a" * 64, "t").rolls_back(seen)
    assert not Checkpoint(11, "b" * 64, "t").rolls_back(seen)


def test_a_countersignature_needs_the_nodes_own_certificate(tmp_path):
    from fedtre.identity.ca import init_network

    init_network(tmp_path / "pki", ["tre-a", "tre-b"])
    bundle = tmp_path / "pki" / "nodes"
    key = provenance.load_private_key((bundle / "tre-a" / "key.pem").read_bytes())
    data = checkpoints.sign(Signer(Ed25519PrivateKey.generate()), Checkpoint(1, "c" * 64, "t")).data
    signature = checkpoints.countersign(key, data)
    cert_a = (bundle / "tre-a" / "cert.pem").read_bytes()
    cert_b = (bundle / "tre-b" / "cert.pem").read_bytes()
    assert (
        checkpoints.check_countersignature(data, Countersignature("tre-a", signature, cert_a))
        == "tre-a"
    )
    with pytest.raises(CheckpointError, match="carries the certificate"):
        checkpoints.check_countersignature(data, Countersignature("tre-a", signature, cert_b))
    with pytest.raises(CheckpointError, match="does not verify"):
        checkpoints.check_countersignature(data, Countersignature("tre-b", signature, cert_b))
