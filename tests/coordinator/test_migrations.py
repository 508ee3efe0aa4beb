"""The coordinator's schema comes from Alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from coordinator.store import migrate
from coordinator.store.engine import create_engine
from coordinator.store.store import Store
from fedtre.errors import Conflict


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), migrate.metadata())


def _revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current_revision(conn)


def test_a_new_database_is_created_by_the_migrations_exactly_as_the_models(engine):
    migrate.prepare(engine)

    assert _revision(engine) == migrate.head_revision()
    assert _differences(engine) == []


def test_a_database_at_the_newest_revision_is_used_as_it_is(engine, database_url):
    store = Store(database_url)
    store.close()

    migrate.prepare(engine)  # nothing to do, nothing raised

    assert _revision(engine) == migrate.head_revision()


def test_a_database_from_before_migrations_is_refused_at_start_then_adopted(engine):
    # Given a database whose tables were made without migrations (an early fedtre),
    migrate.metadata().create_all(engine)

    # when the coordinator starts, it refuses and says what to run;
    with pytest.raises(Conflict, match="fedtre coordinator migrate"):
        migrate.prepare(engine)
    assert _revision(engine) is None

    # `migrate` adopts it, since its tables match this version's, and then it starts.
    done = migrate.upgrade(engine)
    assert done.adopted and done.after == migrate.head_revision()
    migrate.prepare(engine)


def test_a_database_from_before_migrations_that_differs_is_not_adopted(engine):
    migrate.metadata().create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_audit_log_event"))

    with pytest.raises(Conflict, match="cannot be adopted"):
        migrate.upgrade(engine)

    assert _revision(engine) is None


def test_migrate_down_and_up_again_round_trips(engine):
    from alembic import command

    migrate.prepare(engine)
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), "base")
    with engine.connect() as conn:
        assert not set(sa.inspect(conn).get_table_names()) & set(migrate.metadata().tables)

    done = migrate.upgrade(engine)

    assert done.before is None and not done.adopted
    assert _differences(engine) == []


def test_replicas_starting_together_create_the_schema_once(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database")
    engines = [create_engine(database_url) for _ in range(3)]
    errors: list[BaseException] = []

    def start(engine: sa.Engine) -> None:
        try:
            migrate.prepare(engine)
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert _revision(engines[0]) == migrate.head_revision()
    for engine in engines:
        engine.dispose()


def test_fedtre_coordinator_migrate_creates_then_finds_nothing_to_do(tmp_path, capsys):
    from fedtre.cli.main import main

    url = f"sqlite:///{tmp_path / 'coordinator.sqlite'}"

    assert main(["coordinator", "migrate", "--database-url", url]) == 0
    assert main(["coordinator", "migrate", "--database-url", url]) == 0

    out = capsys.readouterr().out.splitlines()
    head = migrate.head_revision()
    assert out == [
        f"migrated the database from empty to revision {head}",
        f"the database is already at revision {head}; nothing to do",
    ]


def test_0004_gives_an_approved_applications_project_its_start_date(engine):
    # Given a database at 0002 holding a committee-approved project and an admin's one,
    from alembic import command

    now = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0002")
    tables = sa.MetaData()
    tables.reflect(engine, only=("users", "projects", "dar_applications"))
    users, projects, applications = (
        tables.tables[n] for n in ("users", "projects", "dar_applications")
    )
    project = {"created_at": now, "description": "", "created_by": "admin", "nodes": ["tre-a"],
               "datasets": ["cohort"], "analyses": ["count"], "approvals_required": 1,
               "auto_approve": [], "approval_expires_at": now + timedelta(days=300)}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(users.insert().values(name="ana", role="researcher", disabled=False,
                                           created_at=now, created_by="admin"))  # fmt: skip
        conn.execute(projects.insert(), [{**project, "name": "by-committee"},
                                         {**project, "name": "by-admin"}])  # fmt: skip
        conn.execute(applications.insert().values(
            project_name="by-committee", state="approved", submitted_by="ana", version=1,
            form={"start_date": "2027-01-01", "end_date": "2027-09-30"}, approvals_required=1,
            submitted_at=now, updated_at=now, approved_at=now,
        ))  # fmt: skip

    # when it is upgraded to the newest revision,
    migrate.upgrade(engine)

    # then the committee's project starts on its approved start date, the admin's at once.
    with engine.connect() as conn:
        starts = dict(conn.execute(sa.text("SELECT name, starts_at FROM projects")).all())
    assert str(starts["by-committee"]).startswith("2027-01-01 00:00:00")
    assert starts["by-admin"] is None
    assert _differences(engine) == []
