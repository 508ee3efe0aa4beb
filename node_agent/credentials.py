"""The agent's certificate and key, re-read when they change: rotation without a restart.

`fedtre ca renew DIR NODE` writes a new key and certificate into the node's bundle. The
agent notices the files changed (at its next ping or reconnect), checks the new pair
belongs together and is still this node's, and reconnects with it. Queued tasks wait at
the coordinator meanwhile; a task delivered but unreported is delivered again.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

import grpc
from cryptography import x509

from fedtre.errors import InvalidRequest
from fedtre.identity.peer import identity_from_certificate
from fedtre.identity.tls import TlsFiles

logger = logging.getLogger(__name__)

# Warn this long before the certificate expires, so the operator renews it in time.
EXPIRY_WARNING = timedelta(days=30)


class ReloadingCredentials:
    """Channel credentials built from a node's bundle, rebuilt when its files change."""

    def __init__(self, files: TlsFiles, node_id: str) -> None:
        self.files = files
        self.node_id = node_id
        self._stamp = self._current_stamp()
        self.credentials, self.not_after = self._build()

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in (self.files.ca, self.files.cert, self.files.key):
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0))
        return tuple(stamps)

    def changed(self) -> bool:
        """Whether the bundle's files differ from those the credentials were built from."""
        return self._current_stamp() != self._stamp

    def reload(self) -> bool:
        """Rebuild the credentials from changed files; return True if they were replaced.

        A pair that does not belong together, or is not this node's, is not used: the
        current credentials stay (a renewal half written is picked up when complete).
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        try:
            credentials, not_after = self._build()
        except InvalidRequest as exc:
            logger.warning("new certificate files not usable yet: %s", exc)
            return False
        self._stamp, self.credentials, self.not_after = stamp, credentials, not_after
        logger.info("certificate reloaded", extra={"node_id": self.node_id, "not_after": not_after})
        return True

    def warn_if_expiring(self, now: datetime | None = None) -> bool:
        """Log a warning when the certificate expires within EXPIRY_WARNING; return
        whether it does (checked at each connection: agents run for months)."""
        left = self.not_after - (now or datetime.now(UTC))
        if left >= EXPIRY_WARNING:
            return False
        logger.warning(
            "this agent's certificate expires in %d days (%s); ask the network admin to "
            "renew it with `fedtre ca renew PKI-DIR %s` and copy the new cert.pem and key.pem "
            "over this agent's",
            max(left.days, 0),
            f"{self.not_after:%Y-%m-%d}",
            self.node_id,
            extra={"node_id": self.node_id, "not_after": self.not_after},
        )
        return True

    def _build(self) -> tuple[grpc.ChannelCredentials, datetime]:
        ca, cert, key = self.files.read()
        certificate = x509.load_pem_x509_certificate(cert)
        identity = identity_from_certificate(certificate)
        if identity.role != "node" or identity.name != self.node_id:
            raise InvalidRequest(
                f"{self.files.cert} is the certificate of {identity.role} '{identity.name}', "
                f"not of node '{self.node_id}'"
            )
        not_after = certificate.not_valid_after_utc
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        return creds, not_after
