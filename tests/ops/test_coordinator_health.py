"""gRPC health (grpc.health.v1) and /readyz follow the coordinator's database."""

from __future__ import annotations

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ops_testkit import FRAME, http_get, scrape, value, wait_for

from coordinator.store.schema import Base
from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "fedtre.v1.JobService", "fedtre.v1.AgentService")


class _SqliteOutage:
    """Makes a SQLite coordinator database unusable by dropping a table it needs."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def begin(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE results"))
            conn.execute(sa.text("DROP TABLE tasks"))
            conn.execute(sa.text("DROP TABLE jobs"))

    def end(self) -> None:
        Base.metadata.create_all(self.engine)
        self.engine.dispose()


class _PostgresOutage:
    """Takes the coordinator's PostgreSQL schema away (its search_path points at nothing)."""

    def __init__(self, admin: sa.Engine, schema: str, url: str) -> None:
        self.admin, self.schema, self.url = admin, schema, url

    def begin(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(self.schema, cascade=True))

    def end(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(sa.schema.CreateSchema(self.schema))
        engine = sa.create_engine(self.url)
        Base.metadata.create_all(engine)
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def outage(request, tmp_path):
    """(database URL, outage) on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coordinator.sqlite'}"
        return url, _SqliteOutage(url)
    url, admin, schema = request.getfixturevalue("pg_schema_url")
    return url, _PostgresOutage(admin, schema, url)


def _statuses(net: LocalNetwork) -> dict[str, int]:
    files = TlsFiles.from_dir(net.pki / "users" / "admin")
    with grpc.secure_channel(net.address, channel_credentials(files)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in SERVICES
        }


def test_health_is_not_serving_while_the_database_is_unreachable(outage):
    url, db = outage
    with LocalNetwork(
        {"tre-a": {"cohort": FRAME}}, database_url=url, metrics=True, health_interval=0.05
    ) as net:
        port = net.coordinator.metrics_port
        # Given a healthy coordinator,
        assert set(_statuses(net).values()) == {SERVING}
        assert http_get(port, "/readyz")[0] == 200

        # when its database becomes unusable,
        db.begin()
        try:
            # then every service reports NOT_SERVING, /readyz fails and the gauge drops,
            wait_for(lambda: set(_statuses(net).values()) == {NOT_SERVING}, what="NOT_SERVING")
            assert http_get(port, "/readyz")[0] == 503
            assert http_get(port, "/livez")[0] == 200
            assert value(scrape(port), "fedtre_database_up") == 0
        finally:
            db.end()

        # and once the database is back, the coordinator serves again.
        wait_for(lambda: set(_statuses(net).values()) == {SERVING}, what="SERVING again")
        assert http_get(port, "/readyz")[0] == 200
        assert value(scrape(port), "fedtre_database_up") == 1
