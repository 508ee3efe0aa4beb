"""Files fedtre writes: readable by their owner only (0600), in folders it creates 0700.

Databases hold released payloads and cohort fingerprints, exports hold the audit trail,
and PKI folders hold keys: none is for other local users. Modes are set exactly (fchmod
and chmod), whatever the process's umask.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create path and its missing parents 0700 (existing folders are left as they are)."""
    target = Path(path)
    missing: list[Path] = []
    for folder in (target, *target.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)
    return target


@contextmanager
def open_private(
    path: str | os.PathLike[str], mode: str = "w", *, exclusive: bool = False, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open path for writing (truncating), created 0600; exclusive refuses an existing file.

    Raises FileExistsError when exclusive and path exists.
    """
    target = Path(path)
    private_dir(target.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(target, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, mode, **kwargs) as handle:
        yield handle


def write_private(
    path: str | os.PathLike[str], data: bytes | str, *, exclusive: bool = False
) -> Path:
    """Write data to path, created 0600; return path. Raises FileExistsError (exclusive)."""
    if isinstance(data, str):
        with open_private(path, "w", exclusive=exclusive, encoding="utf-8") as handle:
            handle.write(data)
    else:
        with open_private(path, "wb", exclusive=exclusive) as handle:
            handle.write(data)
    return Path(path)


def copy_private(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy source's bytes to target, created 0600 (whatever source's mode); return target."""
    return write_private(target, Path(source).read_bytes())


def private_database(path: str | os.PathLike[str]) -> Path:
    """Create an SQLite database file 0600 (in a 0700 folder) before SQLite opens it.

    SQLite gives a database's -wal, -shm and journal files the database file's own mode,
    so they are 0600 too. An existing file of this user's is made 0600 (an older one
    may be world-readable); another user's is left to SQLite to open or refuse.
    """
    target = Path(path)
    if target.exists():
        if target.stat().st_uid == os.getuid():
            os.chmod(target, FILE_MODE)
        return target
    private_dir(target.parent)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return target  # created meanwhile (another replica, another thread)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return target
