"""The replica tests reuse the fault-injection harness (tests/faults) and need PostgreSQL."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))

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
def pg_url() -> Iterator[str]:
    """A URL of the real PostgreSQL on a schema of this test's own, dropped afterwards.

    Skips when PostgreSQL is absent outside CI; in CI (env CI set), fails.
    """
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; CI must provide it")
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    schema = f"fedtre_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True))
    admin.dispose()
