"""The coordinator's schema under Alembic migrations, on SQLite and PostgreSQL.

- `prepare(engine)`, at every start: a new, empty database is created at the newest
  revision; a database at the newest revision is used as it is; any other is refused
  with what to run (`fedtre coordinator migrate`), so a coordinator never runs against a
  schema it was not written for.
- `upgrade(engine)`, from `fedtre coordinator migrate`: brings a database to the newest
  revision. A database created before migrations existed is adopted (stamped) when its
  tables already match the newest schema, and refused otherwise.

Both take PostgreSQL's advisory lock first, so replicas starting together on one empty
database create it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from fedtre.errors import Conflict

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant: the key of the advisory lock that serialises migrations on PostgreSQL.
_LOCK_KEY = 0x66656474726531


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did: the revision before (None for a new database) and after."""

    before: str | None
    after: str
    adopted: bool = False


def metadata() -> sa.MetaData:
    """The coordinator's full schema: every module that declares tables is imported."""
    from coordinator.store import (  # noqa: F401  (they declare tables)
        applications,
        audit_log,
        governance,
    )
    from coordinator.store.schema import Base

    return Base.metadata


def head_revision() -> str:
    """The newest revision this coordinator's code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "coordinator/store/migrations/versions holds no revision"
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The database's revision, None when it has never been migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def prepare(engine: sa.Engine) -> None:
    """Make a new database, accept one at the newest revision, refuse any other.

    Raises Conflict saying what to run when the database needs migrating.
    """
    head = head_revision()
    with engine.begin() as conn:
        _lock(conn)
        current = current_revision(conn)
        if current == head:
            return
        if current is None and not _our_tables(conn):
            command.upgrade(_config(conn), "head")
            return
    where = (
        "was created before schema migrations"
        if current is None
        else f"is at schema revision {current}"
    )
    raise Conflict(
        f"the coordinator database {where}; this coordinator needs revision {head}. Back it "
        "up, then run `fedtre coordinator migrate` with the same database URL, and start again"
    )


def upgrade(engine: sa.Engine) -> Upgrade:
    """Bring the database to the newest revision; return what was done.

    Raises Conflict for a database from before migrations whose tables differ
    from the newest schema (it cannot be adopted safely).
    """
    head = head_revision()
    with engine.begin() as conn:
        _lock(conn)
        before = current_revision(conn)
        if before is None and _our_tables(conn):
            differences = compare_metadata(MigrationContext.configure(conn), metadata())
            if differences:
                raise Conflict(
                    "the coordinator database was created before schema migrations and its "
                    f"tables differ from this version's ({len(differences)} difference(s)); "
                    "it cannot be adopted: export what you need and start from a new database"
                )
            command.stamp(_config(conn), "head")
            return Upgrade(before=None, after=head, adopted=True)
        command.upgrade(_config(conn), "head")
    return Upgrade(before=before, after=head)


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _our_tables(conn: sa.Connection) -> bool:
    present = set(sa.inspect(conn).get_table_names())
    return bool(present & set(metadata().tables))


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
