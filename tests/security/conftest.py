"""Fixtures of the security suite: a trap for every log record, and the no-token check.

Every log record of the suite (DEBUG and up, with its structured fields) is kept, and at
the end of each module no API token the suite has seen may appear in any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sectools import RECORDS, TOKENS, LogTrap


@pytest.fixture(scope="session", autouse=True)
def _log_trap() -> Iterator[None]:
    handler = LogTrap(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture(scope="module", autouse=True)
def _no_token_in_logs() -> Iterator[None]:
    yield
    assert TOKENS, "the suite saw no token, so it checked nothing"
    leaked = [t for t in TOKENS if any(t in line for line in RECORDS)]
    assert not leaked, f"{len(leaked)} API token(s) appear in the logs"
