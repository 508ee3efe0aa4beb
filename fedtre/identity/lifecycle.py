"""A node certificate's life after issue: renewal (rotation), revocation, and the CRL.

Revocation is a certificate revocation list (RFC 5280 CRL) signed by the network CA.
`revoke_node` adds the node's current certificate to `ca/crl.pem` and, when the
coordinator's folder sits in the same network directory, to `coordinator/crl.pem`,
which the running coordinator re-reads: it refuses the certificate on its next call and
closes any stream it holds open (coordinator.auth). The CRL is signed, so a file that
did not come from the CA is refused rather than obeyed.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fedtre.errors import InvalidRequest, NotFound
from fedtre.files import FILE_MODE, copy_private
from fedtre.identity import ca as _ca
from fedtre.identity.peer import identity_from_certificate
from fedtre.identity.signing import (
    SIGNING_KEY_FILE,
    VERIFY_KEY_FILE,
    generate_signing_key,
    write_verify_key,
)

CRL_FILE = "crl.pem"


@dataclass(frozen=True)
class Revocation:
    """What revoke_node did: the serial revoked and the CRL files written."""

    node_id: str
    serial: int
    crl_files: tuple[Path, ...]


def renew_node(
    directory: str | os.PathLike[str],
    node_id: str,
    *,
    validity_days: int = 365,
    revoke_old: bool = False,
    now: dt.datetime | None = None,
) -> Path:
    """Issue node_id a new key and certificate in its existing bundle folder; return it.

    The running agent picks the new pair up when it next reconnects (it watches the
    files), so rotation needs no restart and loses no queued task. The old certificate
    stays valid until it expires unless revoke_old. No other node's files are touched.
    Raises NotFound when the node has no bundle, InvalidRequest for a bad CA or duration.
    """
    root = Path(directory)
    bundle = root / _ca.NODES_DIR / node_id
    old_cert = _read_cert(bundle / _ca.CERT_FILE, node_id)
    _ca._check_days(validity_days)
    ca_cert, ca_key = _ca._load_ca(root)
    now = _ca._now(now)
    not_after = min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    with tempfile.TemporaryDirectory(dir=bundle.parent) as scratch:
        fresh = _ca._issue(Path(scratch) / "new", ca_cert, ca_key, node_id, "node", now, not_after)
        # Key first, then certificate: an agent reading in between sees a pair that does
        # not match, keeps its current credentials and tries again a moment later.
        os.replace(fresh / _ca.KEY_FILE, bundle / _ca.KEY_FILE)
        os.replace(fresh / _ca.CERT_FILE, bundle / _ca.CERT_FILE)
        copy_private(root / _ca.CA_DIR / _ca.CA_FILE, bundle / _ca.CA_FILE)
    if revoke_old:
        _revoke_serials(root, [old_cert.serial_number], now)
    return bundle


def reissue_coordinator(
    directory: str | os.PathLike[str],
    hosts: Iterable[str],
    *,
    validity_days: int = 365,
    now: dt.datetime | None = None,
) -> Path:
    """Issue the coordinator a new key and certificate naming hosts (DNS names and IP
    addresses it is reached at); return its folder.

    Its job-signing key and the nodes' bundles are untouched: agents and people keep
    trusting the same CA. The coordinator serves the new pair once restarted. Raises
    NotFound when DIR holds no coordinator, InvalidRequest for a bad host or duration.
    """
    root = Path(directory)
    folder = root / _ca.COORDINATOR_DIR
    if not (folder / _ca.CERT_FILE).is_file():
        raise NotFound(
            f"{folder / _ca.CERT_FILE} does not exist: give the folder `fedtre ca init` "
            "created (the one holding ca/ and coordinator/)"
        )
    names = _ca._parse_hosts(hosts)
    _ca._check_days(validity_days)
    ca_cert, ca_key = _ca._load_ca(root)
    now = _ca._now(now)
    not_after = min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        fresh = _ca._issue(
            Path(scratch) / "new", ca_cert, ca_key, "coordinator", "coordinator", now,
            not_after, names,
        )  # fmt: skip
        os.replace(fresh / _ca.KEY_FILE, folder / _ca.KEY_FILE)
        os.replace(fresh / _ca.CERT_FILE, folder / _ca.CERT_FILE)
    return folder


def revoke_node(
    directory: str | os.PathLike[str], node_id: str, *, now: dt.datetime | None = None
) -> Revocation:
    """Revoke node_id's current certificate; return what was written.

    Raises NotFound when the node has no bundle and InvalidRequest for a bad CA.
    """
    root = Path(directory)
    cert = _read_cert(root / _ca.NODES_DIR / node_id / _ca.CERT_FILE, node_id)
    files = _revoke_serials(root, [cert.serial_number], _ca._now(now))
    return Revocation(node_id, cert.serial_number, files)


def add_signing_key(directory: str | os.PathLike[str]) -> Path:
    """Give a network created before signed approvals its job-signing key; return its path.

    Writes the private key into the coordinator's folder and the public key beside the
    CA and into every node's bundle (hand each operator the new file). Raises Conflict
    when the network already has one.
    """
    root = Path(directory)
    _ca._load_ca(root)
    private = root / _ca.COORDINATOR_DIR / SIGNING_KEY_FILE
    if private.exists():
        raise InvalidRequest(f"{private} already exists; this network already has its key")
    key = generate_signing_key(private)
    nodes = root / _ca.NODES_DIR
    folders = [root / _ca.CA_DIR, *(sorted(nodes.iterdir()) if nodes.is_dir() else [])]
    for folder in folders:
        write_verify_key(folder / VERIFY_KEY_FILE, key.public_key())
    return private


def load_crl(path: Path, ca_cert: x509.Certificate) -> frozenset[int]:
    """Return the revoked serials of the CRL at path, checked to be signed by ca_cert.

    A missing file means nothing is revoked. Raises InvalidRequest when the file is not a
    CRL of this network's CA (a forged or foreign list is never obeyed, nor silently
    ignored).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the revocation list {path} ({exc.strerror})") from exc
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not a PEM certificate revocation list") from exc
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise InvalidRequest(f"{path} is not signed by this network's CA; refusing it")
    return frozenset(entry.serial_number for entry in crl)


def _revoke_serials(root: Path, serials: Iterable[int], now: dt.datetime) -> tuple[Path, ...]:
    ca_cert, ca_key = _ca._load_ca(root)
    path = root / _ca.CA_DIR / CRL_FILE
    revoked: dict[int, dt.datetime] = {}
    if path.exists():
        crl = x509.load_pem_x509_crl(path.read_bytes())
        revoked = {e.serial_number: e.revocation_date_utc for e in crl}
    for serial in serials:
        revoked.setdefault(serial, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _ca._CLOCK_SKEW)
        # The coordinator re-reads the list whenever it changes and does not expire it.
        .next_update(ca_cert.not_valid_after_utc)
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    written = [path]
    coordinator = root / _ca.COORDINATOR_DIR
    if coordinator.is_dir():
        written.append(coordinator / CRL_FILE)
    for target in written:
        _atomic_write(target, pem)
    return tuple(written)


def _atomic_write(path: Path, data: bytes) -> None:
    # A reader (the coordinator) never sees half a list.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(data)
    os.replace(tmp, path)


def _read_cert(path: Path, node_id: str) -> x509.Certificate:
    _ca._check_name(node_id, "node id")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise NotFound(
            f"no enrolment bundle for node {node_id!r} ({path} is missing); issue one with "
            f"`fedtre ca issue-node DIR {node_id}`"
        ) from exc
    identity = identity_from_certificate(cert)
    if identity.role != "node" or identity.name != node_id:
        raise InvalidRequest(f"{path} is not the certificate of node {node_id!r}")
    return cert
