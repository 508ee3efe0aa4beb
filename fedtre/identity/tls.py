"""Loading a network bundle (ca.pem, cert.pem, key.pem) into gRPC mutual-TLS credentials."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedtre.errors import InvalidRequest
from fedtre.identity.ca import CA_FILE, CERT_FILE, KEY_FILE

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Agents hold a task stream open for hours with nothing on it; keepalive pings find a dead
# connection (NAT or firewall timeouts inside TREs) well before TCP would.
# max_pings_without_data=0 because by default core stops pinging after two silent pings.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

# The server must accept the clients' pings: by default it treats pings more often than
# every 5 minutes as abuse and closes the connection (GOAWAY too_many_pings). 20 s stays
# below the clients' 30 s interval. The server pings too, to drop agents that vanished.
# so_reuseport off: gRPC enables it by default, which lets a second coordinator bind the
# same port silently and share the agents with the first.
# The last two options cut the memory an idle agent's connection costs (most of it is gRPC
# core's TLS buffers: two 17 KB BIO buffers, a 16 KB record buffer, two 8 KB staging
# buffers), for the target of under 100 KB per connected agent (bench/network.py fanout):
# - tsi.max_frame_size: the largest TLS record the coordinator sends (default 16 KB) sizes
#   the record buffer each connection holds; 4 KB saves ~4.5 KB of RSS per connection. It
#   bounds only what the coordinator sends (tasks, API answers), not what agents send
#   (results); a 1 MB answer becomes 256 records instead of 64 (+0.5% bytes on the wire).
# - enable_channelz 0: no channelz socket node and call counters per connection (~1 KB);
#   nothing here serves or reads channelz.
DEFAULT_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.tsi.max_frame_size", 4096),
    ("grpc.enable_channelz", 0),
)


@dataclass(frozen=True)
class TlsFiles:
    """The three files of an identity bundle: the network CA, our certificate, our key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> TlsFiles:
        """Return the bundle in a folder written by `fedtre ca init`."""
        folder = Path(path)
        return cls(ca=folder / CA_FILE, cert=folder / CERT_FILE, key=folder / KEY_FILE)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Return (ca, cert, key) PEM bytes, checked to parse and to belong together.

        Raises InvalidRequest naming the file when one is missing, unreadable or wrong,
        which gRPC would otherwise report only as an opaque handshake failure.
        """
        ca, cert, key = (_read(p) for p in (self.ca, self.cert, self.key))
        try:
            x509.load_pem_x509_certificate(ca)
        except ValueError as exc:
            raise InvalidRequest(f"{self.ca} is not a PEM certificate") from exc
        try:
            certificate = x509.load_pem_x509_certificate(cert)
        except ValueError as exc:
            raise InvalidRequest(f"{self.cert} is not a PEM certificate") from exc
        try:
            private_key = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            # The message of this error never includes the key material.
            raise InvalidRequest(f"{self.key} is not an unencrypted PEM private key") from exc
        if private_key.public_key() != certificate.public_key():
            raise InvalidRequest(f"{self.key} is not the key of {self.cert}")
        return ca, cert, key


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Return credentials that serve `files` and require a client certificate from its CA.

    Only the network CA is trusted, so plaintext clients and certificates from any other
    CA fail the handshake. Raises InvalidRequest if a file is missing or wrong.
    """
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def api_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Return credentials that serve `files` over TLS without asking for a client certificate.

    For the people's API port: callers prove who they are with an API token instead.
    Raises InvalidRequest if a file is missing or wrong.
    """
    _, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)], require_client_auth=False)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Return client credentials presenting `files` and trusting only the network CA.

    Raises InvalidRequest if a file is missing or wrong.
    """
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidRequest(
            f"cannot read {path} ({reason}); create it with `fedtre ca init`"
        ) from exc
