"""A small certificate authority that issues the network's mutual-TLS identities."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedtre.errors import Conflict, InvalidRequest
from fedtre.files import copy_private, private_dir, write_private
from fedtre.identity.peer import NAME_PATTERN, NAME_RULE, USER_ROLES
from fedtre.identity.signing import (
    SIGNING_KEY_FILE,
    VERIFY_KEY_FILE,
    generate_signing_key,
    write_verify_key,
)

CA_DIR = "ca"
COORDINATOR_DIR = "coordinator"
NODES_DIR = "nodes"
USERS_DIR = "users"
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
CA_KEY_FILE = "ca.key"

DEFAULT_COORDINATOR_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

# Certificates are back-dated a little so a host whose clock runs slightly behind the
# admin's still accepts a certificate issued a moment ago.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_ORGANISATION = "fedtre"
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class NetworkPaths:
    """What init_network wrote: the CA's files and one bundle folder per identity."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    coordinator: Path
    nodes: Mapping[str, Path]
    users: Mapping[str, Path]


def init_network(
    directory: str | os.PathLike[str],
    nodes: Iterable[str],
    *,
    users: Iterable[str] = ("admin", "researcher"),
    coordinator_hosts: Iterable[str] = DEFAULT_COORDINATOR_HOSTS,
    validity_days: int = 365,
    ca_validity_days: int = 3650,
    now: dt.datetime | None = None,
) -> NetworkPaths:
    """Create a network CA and issue the coordinator, node and user identities.

    User "admin" gets role admin, every other user role researcher. The CA outlives the
    identities (ca_validity_days) so nodes can still be added and renewed later. Also
    creates the network's Ed25519 job-signing key: private in the coordinator's folder
    (0600), public in the CA folder and in every node's bundle. Returns the paths written. Raises InvalidRequest for a bad name, host or duration,
    and Conflict if DIR already holds a network or any identity folder.
    """
    root = Path(directory)
    node_ids, user_names = _names(nodes, "node id"), _names(users, "user name")
    _check_unique(node_ids + user_names)
    hosts = _parse_hosts(coordinator_hosts)
    _check_days(validity_days, ca_validity_days)

    ca_dir = root / CA_DIR
    if ca_dir.exists():
        raise Conflict(
            f"{ca_dir} already exists, so {root} already holds a fedtre network; add to it "
            f"with `fedtre ca issue-node {root} NODE`, or choose a new directory"
        )
    plan = [(root / COORDINATOR_DIR, "coordinator", "coordinator")]
    plan += [(root / NODES_DIR / n, n, "node") for n in node_ids]
    plan += [(root / USERS_DIR / u, u, _user_role(u)) for u in user_names]
    for bundle, _, _ in plan:
        if bundle.exists():
            raise Conflict(f"{bundle} already exists; remove it or choose a new directory")

    now = _now(now)
    ca_key = _new_key()
    ca_cert = _ca_certificate(ca_key, now, now + dt.timedelta(days=ca_validity_days))
    not_after = now + dt.timedelta(days=validity_days)
    created: list[Path] = []
    try:
        _claim_dir(ca_dir)
        created.append(ca_dir)
        write_private(ca_dir / CA_FILE, _cert_pem(ca_cert))
        _write_private(ca_dir / CA_KEY_FILE, ca_key)
        for bundle, name, role in plan:
            sans = hosts if role == "coordinator" else ()
            created.append(_issue(bundle, ca_cert, ca_key, name, role, now, not_after, sans))
        # The job-signing key: private in the coordinator's folder, public beside the CA
        # (for bundles issued later) and in each node's bundle, pinned by its agent.
        signing = generate_signing_key(root / COORDINATOR_DIR / SIGNING_KEY_FILE)
        for folder in (ca_dir, *(root / NODES_DIR / n for n in node_ids)):
            write_verify_key(folder / VERIFY_KEY_FILE, signing.public_key())
    except BaseException:
        # A half-written network would block the retry with Conflict; leave nothing behind.
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    return NetworkPaths(
        directory=root,
        ca_cert=ca_dir / CA_FILE,
        ca_key=ca_dir / CA_KEY_FILE,
        coordinator=root / COORDINATOR_DIR,
        nodes={n: root / NODES_DIR / n for n in node_ids},
        users={u: root / USERS_DIR / u for u in user_names},
    )


def issue_node(
    directory: str | os.PathLike[str],
    node_id: str,
    *,
    validity_days: int = 365,
    now: dt.datetime | None = None,
) -> Path:
    """Issue one node's enrolment bundle from the network CA; returns its folder.

    Raises InvalidRequest for a bad id or a missing CA, Conflict if the name is taken.
    """
    _check_name(node_id, "node id")
    root = Path(directory)
    bundle = _add_identity(root, NODES_DIR, node_id, "node", validity_days, now)
    verify_key = root / CA_DIR / VERIFY_KEY_FILE
    if verify_key.is_file():  # absent only in networks created before signed approvals
        copy_private(verify_key, bundle / VERIFY_KEY_FILE)
    return bundle


def issue_user(
    directory: str | os.PathLike[str],
    name: str,
    role: str,
    *,
    validity_days: int = 365,
    now: dt.datetime | None = None,
) -> Path:
    """Issue one user's bundle (role admin or researcher); returns its folder.

    Raises InvalidRequest for a bad name or role or a missing CA, Conflict if taken.
    """
    _check_name(name, "user name")
    if role not in USER_ROLES:
        raise InvalidRequest(f"user role must be one of {', '.join(USER_ROLES)}, not {role!r}")
    return _add_identity(Path(directory), USERS_DIR, name, role, validity_days, now)


def _add_identity(
    root: Path, kind_dir: str, name: str, role: str, validity_days: int, now: dt.datetime | None
) -> Path:
    _check_days(validity_days)
    ca_cert, ca_key = _load_ca(root)
    for other in (NODES_DIR, USERS_DIR):
        # Names are unique across nodes and users so an audit record is never ambiguous.
        if (root / other / name).exists():
            raise Conflict(
                f"{root / other / name} already exists; to re-issue it, remove that folder "
                "first, or choose another name"
            )
    now = _now(now)
    if ca_cert.not_valid_after_utc <= now:
        raise InvalidRequest(
            f"the network CA in {root / CA_DIR} expired on "
            f"{ca_cert.not_valid_after_utc:%Y-%m-%d}; create a new network with "
            "`fedtre ca init`"
        )
    # A certificate cannot usefully outlive the CA that vouches for it.
    not_after = min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    return _issue(root / kind_dir / name, ca_cert, ca_key, name, role, now, not_after)


def _issue(
    bundle: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    role: str,
    now: dt.datetime,
    not_after: dt.datetime,
    hosts: Sequence[x509.GeneralName] = (),
) -> Path:
    key = _new_key()
    server = role == "coordinator"
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name, role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(hosts)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())

    _claim_dir(bundle)
    try:
        write_private(bundle / CA_FILE, _cert_pem(ca_cert))
        write_private(bundle / CERT_FILE, _cert_pem(cert))
        _write_private(bundle / KEY_FILE, key)
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise
    return bundle


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, now: dt.datetime, not_after: dt.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "fedtre network CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        # path_length=0: the CA signs identities directly and can never mint another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _load_ca(root: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = root / CA_DIR / CA_FILE, root / CA_DIR / CA_KEY_FILE
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InvalidRequest(
            f"{exc.filename} not found: {root} holds no network CA; "
            "create one with `fedtre ca init`"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidRequest(
            f"the network CA in {root / CA_DIR} could not be read; check its files"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise InvalidRequest(f"{key_path} is not the key of {cert_path}")
    return cert, key


def _subject(name: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANISATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # gRPC cannot load an encrypted key
    )
    # Created 0600 in one step (O_EXCL) so the key is never readable by others, not even
    # briefly, and never overwrites an existing file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # exact, whatever the umask
        handle.write(pem)


def _claim_dir(path: Path) -> None:
    # mkdir without exist_ok is the atomic claim: two issuers racing for a name cannot
    # both write into the same folder. 0700 because the folder holds a private key.
    private_dir(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError as exc:
        raise Conflict(f"{path} already exists; remove it or choose another name") from exc


def _names(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        # A bare "tre-a,tre-b" would otherwise be issued one certificate per character.
        raise InvalidRequest(f"give each {what} as a separate item, not one string")
    names = list(values)
    for name in names:
        _check_name(name, what)
    return names


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(f"{what} {name!r} is not allowed: use {NAME_RULE} characters")


def _check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidRequest(
                f"{name!r} is given twice: node ids and user names must all be different"
            )
        seen.add(name)


def _check_days(validity_days: int, ca_validity_days: int | None = None) -> None:
    if validity_days < 1 or (ca_validity_days is not None and ca_validity_days < validity_days):
        raise InvalidRequest(
            "validity must be at least 1 day, and the CA's at least as long as the identities'"
        )


def _parse_hosts(hosts: Iterable[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str):
        raise InvalidRequest("give each coordinator host as a separate item, not one string")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.fullmatch(host):
            raise InvalidRequest(
                f"coordinator host {host!r} is neither an IP address nor a DNS name"
            )
        names.append(x509.DNSName(host.lower()))
    if not names:
        raise InvalidRequest("give at least one coordinator host name or IP address")
    return names


def _user_role(name: str) -> str:
    return "admin" if name == "admin" else "researcher"


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise InvalidRequest("now must be timezone-aware")
    return now
