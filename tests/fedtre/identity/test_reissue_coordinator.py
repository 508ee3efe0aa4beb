"""`fedtre ca issue-coordinator`: a new certificate for the names the coordinator is
reached at, under the same CA, leaving its signing key and every node alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from fedtre.errors import InvalidRequest, NotFound
from fedtre.identity.ca import init_network
from fedtre.identity.lifecycle import reissue_coordinator
from fedtre.identity.tls import TlsFiles


def names(cert: Path) -> set[str]:
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return {*sans.value.get_values_for_type(x509.DNSName)} | {
        str(a) for a in sans.value.get_values_for_type(x509.IPAddress)
    }


def test_the_new_certificate_names_the_hosts_and_nothing_else_changes(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_network(pki, ["tre-a"], users=())
    untouched = {
        p: p.read_bytes()
        for p in [pki / "coordinator" / "job-signing-key.pem", *(pki / "nodes").rglob("*.pem")]
    }

    folder = reissue_coordinator(pki, ["coordinator.example.org", "10.0.0.5"])

    assert names(folder / "cert.pem") == {"coordinator.example.org", "10.0.0.5"}
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    TlsFiles.from_dir(folder).read()  # the key is the certificate's, from the network CA
    assert {p: p.read_bytes() for p in untouched} == untouched


def test_a_folder_without_a_coordinator_or_a_bad_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="fedtre ca init"):
        reissue_coordinator(tmp_path, ["coordinator.example.org"])

    init_network(tmp_path / "pki", ["tre-a"], users=())
    before = (tmp_path / "pki" / "coordinator" / "cert.pem").read_bytes()
    with pytest.raises(InvalidRequest, match="neither an IP address nor a DNS name"):
        reissue_coordinator(tmp_path / "pki", ["not a host"])
    assert (tmp_path / "pki" / "coordinator" / "cert.pem").read_bytes() == before
