"""Why a connection to the coordinator failed, and what to do about it.

gRPC reports most failures as UNAVAILABLE with a transport detail ("Socket closed",
"Connection refused") that does not say what to do. After such a failure, diagnose()
connects once more with Python's own TLS, where each cause is visible, and returns
a message naming the cause and its fix:

- nothing listens on the port (connection refused), or the host name does not resolve;
- the coordinator's certificate does not name the host that was dialled;
- the server asks for a client certificate the caller does not have: a person dialled
  the agents' port (the agents' reverse mistake is answered by the coordinator itself);
- the port does not speak TLS, or its certificate is not from the network CA.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from cryptography import x509

PROBE_TIMEOUT_S = 3.0
# What a gRPC server sends first on a new HTTP/2 connection: a SETTINGS frame (type 4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS = 0x04


def split_target(target: str) -> tuple[str, int] | None:
    """(host, port) of "host:port" or "[v6]:port"; None for anything else (e.g. dns:///...)."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "/" in target:
        return None
    return host.strip("[]"), int(port)


def diagnose(
    target: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = PROBE_TIMEOUT_S,
) -> str | None:
    """What went wrong connecting to target with these files, and its fix; None when the
    probe finds nothing wrong (the failure was elsewhere, e.g. a server restarting)."""
    parsed = split_target(target)
    if parsed is None:
        return None
    host, port = parsed
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        return f"cannot reach the coordinator: the host name {host!r} does not resolve; check the address {target}"
    except ConnectionRefusedError:
        return (
            f"cannot reach the coordinator: nothing is listening on {target} (connection "
            "refused). Is the coordinator "
            "running, and is the port right? It serves agents on its --listen port (by "
            "default 50051) and people on its --api-listen port (by default 50052)"
        )
    except OSError as exc:
        return f"cannot connect to {target} ({exc.strerror or type(exc).__name__}): a firewall?"
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    with raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(timeout)
                tls.sendall(_H2_PREFACE)
                first = tls.recv(9)
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
                return _hostname_mismatch(target, host, port, timeout)
            return (
                f"the certificate served on {target} is not from your network's CA "
                f"({ca}): {exc.verify_message}; is the address, or the CA file, right?"
            )
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, TimeoutError):
            first = b""  # closed on us once the handshake was done
        except ssl.SSLError as exc:
            if "CERTIFICATE_REQUIRED" in str(exc):
                first = b""
            elif "WRONG_VERSION_NUMBER" in str(exc) or "PACKET_LENGTH" in str(exc):
                return f"{target} does not speak TLS: is it the coordinator's port?"
            else:
                return f"the TLS handshake with {target} failed ({exc.reason or exc})"
    if len(first) >= 4 and first[3] == _SETTINGS:
        return None
    if cert is None:
        return (
            f"{target} asks for a client certificate: it is the coordinator's port for "
            "agents (--listen, by default 50051). People connect to its API port "
            "(--api-listen, by default 50052) with their API token"
        )
    return None


def _hostname_mismatch(target: str, host: str, port: int, timeout: float) -> str:
    names = ", ".join(_certificate_names(host, port, timeout)) or "no host names"
    return (
        f"the coordinator's certificate is not valid for {host!r} (it names {names}). "
        f"Connect with one of those names, or re-issue the coordinator's certificate for "
        f"this name: `fedtre ca issue-coordinator PKI-DIR --hosts {host}` (list every name "
        f"and address the coordinator is reached at), then restart the coordinator"
    )


def _certificate_names(host: str, port: int, timeout: float) -> list[str]:
    """The DNS names and IP addresses the server's certificate names (unverified read)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return []
    if not der:
        return []
    try:
        sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return []
    names = sans.value.get_values_for_type(x509.DNSName)
    addresses = [str(a) for a in sans.value.get_values_for_type(x509.IPAddress)]
    return [*names, *addresses]
