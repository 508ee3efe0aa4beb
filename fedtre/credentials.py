"""A person's credentials for the coordinator: the network CA to trust, and an API token.

People authenticate with an API token sent as `authorization: Bearer <token>` over TLS
(coordinator.auth). An identity folder holds what one person needs:

    ca.pem     the network CA certificate (public): proves the coordinator is ours
    token      the API token (mode 0600), from `fedtre tokens issue` or bootstrap-admin
    cert.pem   optional, with key.pem: a client certificate for the coordinator's
    key.pem    mutual-TLS port; the token still decides who you are

Tokens are read from files or the environment, never from the command line, where any
user of the machine could read them in the process list.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc

from fedtre.errors import InvalidRequest
from fedtre.files import private_dir
from fedtre.identity.ca import CA_FILE, CERT_FILE, KEY_FILE
from fedtre.identity.tls import TlsFiles, channel_credentials

TOKEN_FILE = "token"


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Return the token in a file (surrounding whitespace removed).

    Raises InvalidRequest when it cannot be read or is empty. A file others can read is
    used, but is a leak waiting to happen: write tokens with write_token_file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the token file {path} ({exc.strerror or type(exc).__name__})"
        ) from exc
    if not text or any(c.isspace() for c in text):
        raise InvalidRequest(f"the token file {path} does not hold one token")
    return text


def write_token_file(path: str | os.PathLike[str], token: str) -> Path:
    """Write token to path, readable by its owner only (0600), never overwriting; return it.

    Raises InvalidRequest when path exists.
    """
    target = Path(path)
    private_dir(target.parent)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InvalidRequest(f"{target} already exists; remove it or choose another path") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), stat.S_IRUSR | stat.S_IWUSR)
        handle.write(token + "\n")
    return target


def person_credentials(
    identity: TlsFiles | str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    ca: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """Return channel credentials for a person: TLS trusting the network CA, plus the token.

    identity is an identity folder (or TlsFiles); ca overrides its CA certificate; token
    overrides the folder's token file. A folder with cert.pem and key.pem also presents
    that client certificate. Raises InvalidRequest when no CA certificate is given.
    """
    files: TlsFiles | None = None
    folder: Path | None = None
    if isinstance(identity, TlsFiles):
        files = identity
    elif identity is not None:
        folder = Path(identity)
        files = TlsFiles.from_dir(folder)
    if token is None and folder is not None and (folder / TOKEN_FILE).is_file():
        token = read_token_file(folder / TOKEN_FILE)
    mutual = files is not None and files.cert.is_file() and files.key.is_file()
    if ca is None and files is not None and mutual:
        transport = channel_credentials(files)
    else:
        ca_file = Path(ca) if ca is not None else (files.ca if files is not None else None)
        if ca_file is None:
            raise InvalidRequest(
                f"give the network CA certificate ({CA_FILE}) to trust the coordinator: an "
                f"identity folder holding it, or ca=PATH (--ca / FEDTRE_CA)"
            )
        try:
            root = ca_file.read_bytes()
        except OSError as exc:
            raise InvalidRequest(
                f"cannot read the network CA certificate {ca_file} "
                f"({exc.strerror or type(exc).__name__})"
            ) from exc
        transport = grpc.ssl_channel_credentials(root_certificates=root)
    if not token:
        # The coordinator answers UNAUTHENTICATED with how to get one; the CLI checks first.
        return transport
    token = token.strip()
    if any(c.isspace() for c in token):
        raise InvalidRequest("an API token is one word; check the token file")
    return grpc.composite_channel_credentials(transport, grpc.access_token_call_credentials(token))


__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "TOKEN_FILE",
    "person_credentials",
    "read_token_file",
    "write_token_file",
]
