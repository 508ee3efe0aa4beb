"""An in-process network for tests and rehearsal: a real coordinator and real agents on loopback.

    with LocalNetwork({"tre-a": {"cohort": df_a}, "tre-b": {"cohort": "b.csv"}}) as net:
        result = net.client().submit("count", dataset="cohort").result()

Everything is real: gRPC over mutual TLS on 127.0.0.1, SQLite files, the agents' own
config files and state; only the processes are threads of this one.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fedtre.client import Client
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest, Unavailable
from fedtre.identity.ca import init_network
from fedtre.identity.tls import TlsFiles

DataSpec = Mapping[str, Mapping[str, "pd.DataFrame | str | Path"]]


def column_types(frame: pd.DataFrame) -> dict[str, str]:
    """The declared type of each column, read from its pandas dtype."""
    types = {}
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            types[str(name)] = "boolean"
        elif pd.api.types.is_integer_dtype(dtype):
            types[str(name)] = "integer"
        elif pd.api.types.is_float_dtype(dtype):
            types[str(name)] = "float"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            types[str(name)] = "date"
        else:
            types[str(name)] = "string"
    return types


class LocalNetwork:
    """A coordinator and one agent per node, started on enter and stopped on exit."""

    def __init__(
        self,
        data: DataSpec,
        *,
        policy: Mapping[str, Any] | None = None,
        auto_approve: bool = True,
        directory: str | Path | None = None,
        start_timeout: float = 30.0,
        ping_interval: float = 15.0,
        metrics: bool = False,
        database_url: str | None = None,
        health_interval: float = 5.0,
    ) -> None:
        if not data:
            raise InvalidRequest("give at least one node, e.g. {'tre-a': {'cohort': frame}}")
        self.data = data
        self.policy = DisclosurePolicy.from_mapping(policy or {})
        self.auto_approve = auto_approve
        self._own_dir = directory is None
        self.directory = (
            Path(directory) if directory else Path(tempfile.mkdtemp(prefix="fedtre-net-"))
        )
        self.start_timeout = start_timeout
        self.ping_interval = ping_interval
        # metrics: serve /metrics, /livez and /readyz of the coordinator and of each
        # agent on free loopback ports (coordinator.metrics_port, agents[n].metrics_port).
        self.metrics = metrics
        self.database_url = database_url
        self.health_interval = health_interval
        self.agents: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self.coordinator: Any = None
        self.address = ""

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from coordinator.config import CoordinatorConfig
        from coordinator.server import CoordinatorServer

        self.pki = self.directory / "pki"
        init_network(self.pki, list(self.data))
        config = CoordinatorConfig(
            tls=TlsFiles.from_dir(self.pki / "coordinator"),
            listen="127.0.0.1:0",
            database_url=self.database_url or f"sqlite:///{self.directory / 'coordinator.sqlite'}",
            auto_approve=self.auto_approve,
            ping_interval=self.ping_interval,
            metrics_listen="127.0.0.1:0" if self.metrics else None,
            health_interval=self.health_interval,
        )
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="coordinator", daemon=True
        )
        self._loop_thread.start()
        self.coordinator = CoordinatorServer(config)
        port = asyncio.run_coroutine_threadsafe(self.coordinator.start(), self._loop).result(30)
        self.address = f"127.0.0.1:{port}"
        for node_id, datasets in self.data.items():
            self.start_agent(node_id, datasets)
        self.wait_until_online(list(self.data))

    def start_agent(self, node_id: str, datasets: Mapping[str, Any]) -> None:
        """Write the node's data and agent config, and start its agent."""
        from node_agent.app import Agent
        from node_agent.config import AgentConfig, DatasetConfig, TlsConfig, write_config

        home = self.directory / "nodes" / node_id
        home.mkdir(parents=True, exist_ok=True)
        declared = {
            name: _dataset_config(name, value, home, DatasetConfig)
            for name, value in datasets.items()
        }
        bundle = self.pki / "nodes" / node_id
        config = write_config(
            home / "agent.toml",
            AgentConfig(
                node_id=node_id,
                coordinator=self.address,
                state_db=home / "agent-state.sqlite",
                tls=TlsConfig(bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem"),
                datasets=declared,
                policy=self.policy,
                metrics_listen="127.0.0.1:0" if self.metrics else None,
            ),
        )
        agent = Agent(config)
        agent.start()
        self.agents[node_id] = agent

    def stop_agent(self, node_id: str) -> None:
        agent = self.agents.pop(node_id, None)
        if agent is not None:
            agent.stop()

    def wait_until_online(self, node_ids: list[str]) -> None:
        deadline = time.monotonic() + self.start_timeout
        with self.client("admin") as client:
            while True:
                online = {n.node_id for n in client.nodes() if n.online}
                if set(node_ids) <= online:
                    return
                if time.monotonic() > deadline:
                    missing = sorted(set(node_ids) - online)
                    raise Unavailable(
                        f"agents did not connect within {self.start_timeout} s: {missing}"
                    )
                time.sleep(0.02)

    def stop(self) -> None:
        for node_id in list(self.agents):
            self.stop_agent(node_id)
        if self.coordinator is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.coordinator.stop(grace=1.0), self._loop).result(
                30
            )
            self.coordinator = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=10)
            self._loop.close()
            self._loop = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- clients ---------------------------------------------------------------------

    def client(self, user: str = "researcher") -> Client:
        """A Client over mTLS as `user` ("researcher" or "admin")."""
        return Client(self.address, TlsFiles.from_dir(self.pki / "users" / user))


def _dataset_config(name: str, value: Any, home: Path, dataset_config: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        path = home / f"{name}.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            value.to_sql(name, conn, index=False, if_exists="replace")
        engine.dispose()
        return dataset_config(
            name=name, columns=column_types(value), url=f"sqlite:///{path}", table=name
        )
    path = Path(value).resolve()
    if path.suffix.lower() == ".csv":
        return dataset_config(
            name=name, columns=column_types(pd.read_csv(path, nrows=1000)), csv=path
        )
    if path.suffix.lower() in (".sqlite", ".db", ".sqlite3"):
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            frame = pd.read_sql(sa.select(table).limit(1000), conn)
        engine.dispose()
        return dataset_config(
            name=name, columns=column_types(frame), url=f"sqlite:///{path}", table=name
        )
    raise InvalidRequest(
        f"dataset '{name}': give a DataFrame, a .csv file or a SQLite file holding table '{name}'"
    )
