"""Fixtures every test package shares: the real PostgreSQL, in a schema of each test's own.

PostgreSQL tests skip when the server is absent, except in CI (env CI set), where its
absence fails them: CI must test against it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("FEDTRE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url_if_any() -> str | None:
    """PG_URL when the server answers (asked once a session); None when it is absent
    outside CI; fails in CI."""
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return PG_URL
    except Exception:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; CI must provide it")
        return None


@pytest.fixture(scope="session")
def postgres_url(postgres_url_if_any: str | None) -> str:
    """PG_URL; skips the test when PostgreSQL is absent outside CI."""
    if postgres_url_if_any is None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    return postgres_url_if_any


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[tuple[str, sa.Engine, str]]:
    """(URL whose search_path is a fresh schema, an engine on the server, the schema).

    The schema is dropped afterwards (if the test has not dropped it itself).
    """
    schema = f"fedtre_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    yield f"{postgres_url}?options=-csearch_path%3D{schema}", admin, schema
    with admin.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    admin.dispose()


@pytest.fixture
def pg_url(pg_schema_url: tuple[str, sa.Engine, str]) -> str:
    """A URL of the real PostgreSQL on a schema of this test's own, dropped afterwards."""
    return pg_schema_url[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh coordinator database URL, on SQLite and on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coordinator.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Any]:
    """A coordinator Store on a fresh database, on SQLite and on PostgreSQL."""
    from coordinator.store.store import Store

    s = Store(database_url)
    yield s
    s.close()


SPARK_MASTER = "local[2]"


@pytest.fixture(scope="session")
def spark_master_if_any() -> Iterator[str | None]:
    """The master of the one SparkSession of the test run (local threads, two shuffle
    partitions, no UI: the JVM starts once); None when pyspark or Java is absent outside
    CI; fails in CI, which must test Spark."""
    try:
        from pyspark.sql import SparkSession

        session = (
            SparkSession.builder.master(SPARK_MASTER)
            .appName("fedtre-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.showConsoleProgress", "false")
            # Small data: compiling each plan to Java and re-planning at run time cost
            # more than they save (about a third of the Spark tests' time).
            .config("spark.sql.codegen.wholeStage", "false")
            .config("spark.sql.adaptive.enabled", "false")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Spark cannot start ({exc!r}); CI must test it")
        yield None
        return
    yield SPARK_MASTER
    session.stop()


@pytest.fixture(scope="session")
def spark_master(spark_master_if_any: str | None) -> str:
    """The test run's Spark master; skips the test when Spark cannot start outside CI."""
    if spark_master_if_any is None:
        pytest.skip("pyspark or a Java runtime is not installed")
    return spark_master_if_any
