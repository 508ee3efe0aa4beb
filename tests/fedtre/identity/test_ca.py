"""The network CA: layout, certificate contents, key permissions and refusals."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedtre.errors import Conflict, InvalidRequest
from fedtre.identity.ca import NetworkPaths, init_network, issue_node, issue_user
from fedtre.identity.peer import Identity, identity_from_pem

BUNDLE_FILES = {"ca.pem", "cert.pem", "key.pem"}
# A node's bundle also carries the network's job-signing public key, which its agent pins.
NODE_BUNDLE_FILES = BUNDLE_FILES | {"job-signing-pub.pem"}


def _cert(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())


def _ca(paths: NetworkPaths) -> x509.Certificate:
    return x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_init_writes_one_bundle_per_identity(network: NetworkPaths) -> None:
    root = network.directory
    assert network.ca_cert == root / "ca" / "ca.pem" and network.ca_key == root / "ca" / "ca.key"
    assert {p.name for p in (root / "ca").iterdir()} == {"ca.pem", "ca.key", "job-signing-pub.pem"}
    assert network.coordinator == root / "coordinator"
    assert network.nodes == {n: root / "nodes" / n for n in ("tre-a", "tre-b", "tre-c")}
    assert network.users == {u: root / "users" / u for u in ("admin", "researcher")}
    assert {p.name for p in network.coordinator.iterdir()} == BUNDLE_FILES | {"job-signing-key.pem"}
    for folder in network.nodes.values():
        assert {p.name for p in folder.iterdir()} == NODE_BUNDLE_FILES
    for folder in network.users.values():
        assert {p.name for p in folder.iterdir()} == BUNDLE_FILES
    for folder in [network.coordinator, *network.nodes.values(), *network.users.values()]:
        assert (folder / "ca.pem").read_bytes() == network.ca_cert.read_bytes()


def test_private_keys_are_owner_only(network: NetworkPaths) -> None:
    keys = [network.ca_key, *network.directory.rglob("key.pem")]
    assert len(keys) == 1 + 1 + 3 + 2
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert stat.S_IMODE(key.parent.stat().st_mode) & 0o077 == 0, key.parent


@pytest.mark.parametrize(
    ("kind", "name", "identity"),
    [
        ("coordinator", "", Identity("coordinator", "coordinator")),
        ("nodes", "tre-b", Identity("tre-b", "node")),
        ("users", "admin", Identity("admin", "admin")),
        ("users", "researcher", Identity("researcher", "researcher")),
    ],
)
def test_certificate_names_its_identity(
    network: NetworkPaths, kind: str, name: str, identity: Identity
) -> None:
    folder = network.directory / kind / name
    assert identity_from_pem((folder / "cert.pem").read_bytes()) == identity


def test_ca_certificate_is_a_ca_that_can_only_sign_leaves(network: NetworkPaths) -> None:
    ca = _ca(network)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature


@pytest.mark.parametrize(
    ("kind", "name", "purpose"),
    [
        ("coordinator", "", ExtendedKeyUsageOID.SERVER_AUTH),
        ("nodes", "tre-a", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("users", "researcher", ExtendedKeyUsageOID.CLIENT_AUTH),
    ],
)
def test_leaf_certificates_are_signed_for_one_purpose(
    network: NetworkPaths, kind: str, name: str, purpose: x509.ObjectIdentifier
) -> None:
    ca, cert = _ca(network), _cert(network.directory / kind / name)
    cert.verify_directly_issued_by(ca)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [purpose]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_coordinator_certificate_names_its_default_hosts(network: NetworkPaths) -> None:
    sans = _cert(network.coordinator).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.value.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_coordinator_hosts_are_configurable(tmp_path: Path) -> None:
    paths = init_network(tmp_path, [], coordinator_hosts=["coord.tre.example", "10.0.0.5"])
    sans = _cert(paths.coordinator).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["coord.tre.example"]
    assert sans.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]


def test_node_bundle_holds_only_its_own_key(network: NetworkPaths) -> None:
    bundle = network.nodes["tre-a"]
    key = serialization.load_pem_private_key((bundle / "key.pem").read_bytes(), password=None)
    assert key.public_key() == _cert(bundle).public_key()
    others = [network.ca_key, network.coordinator / "key.pem"]
    others += [network.nodes[n] / "key.pem" for n in ("tre-b", "tre-c")]
    others += [folder / "key.pem" for folder in network.users.values()]
    own = (bundle / "key.pem").read_bytes()
    assert all(path.read_bytes() != own for path in others)
    assert {p.name for p in bundle.iterdir()} == NODE_BUNDLE_FILES
    # the signing key's public half only: the private half stays with the coordinator
    pinned = (bundle / "job-signing-pub.pem").read_bytes()
    assert b"PRIVATE" not in pinned
    assert pinned == (network.directory / "ca" / "job-signing-pub.pem").read_bytes()


def test_init_refuses_an_existing_network_and_changes_nothing(network: NetworkPaths) -> None:
    before = _snapshot(network.directory)

    with pytest.raises(Conflict, match="issue-node"):
        init_network(network.directory, ["tre-z"])

    assert _snapshot(network.directory) == before


def test_init_refuses_a_leftover_identity_folder(tmp_path: Path) -> None:
    (tmp_path / "nodes" / "tre-a").mkdir(parents=True)

    with pytest.raises(Conflict, match="already exists"):
        init_network(tmp_path, ["tre-a"])

    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize("bad", ["TRE-A", "-tre", "tre_a", "", "a" * 64, "../tre", "tré"])
def test_init_rejects_a_bad_name_before_writing(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidRequest, match="lower-case letters, digits and '-'"):
        init_network(tmp_path / "net", ["tre-a", bad])

    assert not (tmp_path / "net").exists()


@pytest.mark.parametrize(
    ("nodes", "users"), [(["tre-a", "tre-a"], ["admin"]), (["tre-a"], ["admin", "tre-a"])]
)
def test_init_rejects_a_repeated_name(tmp_path: Path, nodes: list[str], users: list[str]) -> None:
    with pytest.raises(InvalidRequest, match="must all be different"):
        init_network(tmp_path, nodes, users=users)


def test_init_rejects_a_comma_separated_string(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="separate item"):
        init_network(tmp_path, "tre-a,tre-b")


def test_init_rejects_a_bad_host(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="neither an IP address nor a DNS name"):
        init_network(tmp_path, ["tre-a"], coordinator_hosts=["bad host"])


def test_issue_node_adds_a_bundle_without_touching_others(tmp_path: Path) -> None:
    paths = init_network(tmp_path, ["tre-a"])
    before = _snapshot(tmp_path)

    folder = issue_node(tmp_path, "tre-d")

    assert folder == tmp_path / "nodes" / "tre-d"
    after = _snapshot(tmp_path)
    assert {p: after[p] for p in before} == before
    assert set(after) - set(before) == {folder / name for name in NODE_BUNDLE_FILES}
    _cert(folder).verify_directly_issued_by(_ca(paths))
    assert identity_from_pem((folder / "cert.pem").read_bytes()) == Identity("tre-d", "node")
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600


def test_issue_user_gives_the_requested_role(tmp_path: Path) -> None:
    init_network(tmp_path, ["tre-a"])

    folder = issue_user(tmp_path, "ops", "admin")

    assert identity_from_pem((folder / "cert.pem").read_bytes()) == Identity("ops", "admin")


@pytest.mark.parametrize("role", ["node", "coordinator", "root"])
def test_issue_user_refuses_a_non_user_role(tmp_path: Path, role: str) -> None:
    init_network(tmp_path, ["tre-a"])

    with pytest.raises(InvalidRequest, match="admin, researcher"):
        issue_user(tmp_path, "mallory", role)

    assert not (tmp_path / "users" / "mallory").exists()


@pytest.mark.parametrize("name", ["tre-a", "researcher"])
def test_issue_node_refuses_a_taken_name(tmp_path: Path, name: str) -> None:
    init_network(tmp_path, ["tre-a"])
    before = _snapshot(tmp_path)

    with pytest.raises(Conflict, match="remove that folder"):
        issue_node(tmp_path, name)

    assert _snapshot(tmp_path) == before


def test_issue_node_without_a_network_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="fedtre ca init"):
        issue_node(tmp_path, "tre-a")

    assert not (tmp_path / "nodes").exists()


def test_identities_expire_after_validity_but_never_after_the_ca(tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    init_network(tmp_path, ["tre-a"], validity_days=30, ca_validity_days=100, now=start)

    late = issue_node(tmp_path, "tre-b", validity_days=365, now=start + dt.timedelta(days=90))

    assert _cert(tmp_path / "nodes" / "tre-a").not_valid_after_utc == start + dt.timedelta(30)
    assert _cert(late).not_valid_after_utc == start + dt.timedelta(days=100)


def test_issue_node_refuses_once_the_ca_has_expired(tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    init_network(tmp_path, ["tre-a"], validity_days=10, ca_validity_days=10, now=start)

    with pytest.raises(InvalidRequest, match="expired"):
        issue_node(tmp_path, "tre-b", now=start + dt.timedelta(days=11))

    assert not (tmp_path / "nodes" / "tre-b").exists()
