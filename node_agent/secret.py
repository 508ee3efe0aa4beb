"""The TRE's cell-key secret: created once, kept 0600 beside the agent's state, never sent."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fedtre.errors import InvalidRequest
from fedtre.files import write_private

logger = logging.getLogger(__name__)

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Return the secret in path, creating it (32 random bytes, mode 0600) when absent.

    The secret keys every record key and magnitude noise: the same secret gives the same
    answers after a restart, so a repeated query cannot average the noise away. Raises
    InvalidRequest when the file is unreadable, too short, or readable by others.
    """
    if not path.exists():
        write_private(path, secrets.token_bytes(SECRET_BYTES), exclusive=True)
        logger.info("created the cell-key secret", extra={"path": str(path)})
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the cell-key secret {path} ({exc.strerror}); check its owner and mode"
        ) from exc
    if mode & 0o077:
        raise InvalidRequest(
            f"the cell-key secret {path} is readable by others (mode {mode:o}); "
            f"run: chmod 600 {path}"
        )
    if len(data) < 16:
        raise InvalidRequest(
            f"the cell-key secret {path} is shorter than 16 bytes; delete it to have the agent "
            "create a new one (released answers will then change once)"
        )
    return data
