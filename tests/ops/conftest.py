"""Fixtures for the operations tests: fresh coordinator databases on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("FEDTRE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_available() -> bool:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture
def pg_schema_url():
    """A PostgreSQL URL whose search_path is a fresh schema; yields (url, admin engine, schema)."""
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; CI must provide it")
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    schema = f"fedtre_ops_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}", admin, schema
    with admin.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh coordinator database URL, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.sqlite'}"
        return
    yield request.getfixturevalue("pg_schema_url")[0]
