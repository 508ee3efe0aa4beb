"""Creating the coordinator's database engine (SQLite embedded default, PostgreSQL in production)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fedtre.errors import InvalidRequest
from fedtre.files import private_database

# An execution option: transactions of connections carrying it only read (Store._read).
READ_ONLY = "fedtre_read_only"


def create_engine(url: str) -> sa.Engine:
    """Return an engine for url; raise InvalidRequest for a URL SQLAlchemy cannot use."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The parser's message would echo the URL, password included: say only what to do.
        raise InvalidRequest(
            "cannot parse the database URL; use e.g. sqlite:///coordinator.sqlite or "
            "postgresql+psycopg://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if (
            parsed.database
            and parsed.database != ":memory:"
            and not parsed.database.startswith("file:")
        ):
            private_database(parsed.database)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        _serialise_sqlite_writers(engine)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


def _serialise_sqlite_writers(engine: sa.Engine) -> None:
    # SQLite's deferred transactions fail with "database is locked" when two threads
    # read and then upgrade to write; BEGIN IMMEDIATE takes the write lock up front so
    # concurrent transactions queue (bounded by the busy timeout) instead. A transaction
    # that only reads never upgrades: a plain BEGIN lets it read a snapshot beside the
    # writer (WAL) rather than queue behind it.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
