"""An in-process network for tests and rehearsal: a real coordinator and real agents on loopback.

    with LocalNetwork({"tre-a": {"cohort": df_a}, "tre-b": {"cohort": "b.csv"}}) as net:
        result = net.client().submit("count", dataset="cohort").result()

Everything is real: gRPC over TLS on 127.0.0.1 (agents with their certificates, people
with API tokens), SQLite files, the agents' own config files and state, signed
approvals; only the processes are threads of this one.

Governance is set up as a small network would be: people "admin", "approver" and
"researcher", each with a token (and an identity folder pki/users/<name>/ holding
ca.pem and token), and a project "default" with every node, dataset and catalogue
analysis, whose member is "researcher". With auto_approve (the default) the project
approves every analysis automatically; otherwise each job needs one approver.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import sqlalchemy as sa

from fedtre.analyses import CATALOGUE
from fedtre.client import Client
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest, Unavailable
from fedtre.identity.ca import init_network
from fedtre.identity.peer import Identity
from fedtre.identity.tls import TlsFiles


@dataclass(frozen=True)
class SparkFile:
    """A node's CSV or Parquet file read by Spark SQL (engine = "spark"; needs pyspark)."""

    path: str | Path
    master: str | None = None


DataSpec = Mapping[str, Mapping[str, "pd.DataFrame | str | Path | SparkFile"]]


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


def eventually(
    condition: Callable[[], bool],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> None:
    """Wait until condition() holds (polled every interval seconds); AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


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
        governance: Mapping[str, Mapping[str, Any]] | None = None,
        approvals_required: int = 1,
        grids: Mapping[str, Mapping[str, float]] | None = None,
        committee_approvals: int = 1,
    ) -> None:
        """grids: per dataset name, the grid width of each numeric column whose bounds may
        be released (histogram, quantiles, survival), as a TRE declares them."""
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
        # address: the coordinator's mutual-TLS port (agents, and people with certificates);
        # api_address: its TLS port for people with API tokens.
        self.address = ""
        self.api_address = ""
        # Per node: the agent's [governance] settings (node_agent.sovereignty).
        self.governance = dict(governance or {})
        self.approvals_required = approvals_required
        self.grids = {name: dict(g) for name, g in (grids or {}).items()}
        # How many approvers of the data access committee approve an application.
        self.committee_approvals = committee_approvals
        self.tokens: dict[str, str] = {}

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
            api_listen="127.0.0.1:0",
            database_url=self.database_url or f"sqlite:///{self.directory / 'coordinator.sqlite'}",
            ping_interval=self.ping_interval,
            metrics_listen="127.0.0.1:0" if self.metrics else None,
            health_interval=self.health_interval,
            committee_approvals=self.committee_approvals,
        )
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="coordinator", daemon=True
        )
        self._loop_thread.start()
        self.coordinator = CoordinatorServer(config)
        port = asyncio.run_coroutine_threadsafe(self.coordinator.start(), self._loop).result(30)
        self.address = f"127.0.0.1:{port}"
        self.api_address = f"127.0.0.1:{self.coordinator.api_port}"
        for name in ("admin", "approver", "researcher"):
            self.add_user(name, name, projects=())
        for node_id, datasets in self.data.items():
            self.start_agent(node_id, datasets)
        self.wait_until_online(list(self.data))
        self._add_default_project()

    def _add_default_project(self) -> None:
        """The project "default" (in-process, as an admin would), once the agents have
        registered what they offer: a project names only what the network has."""
        if self.coordinator.admin.governance.project("default") is None:
            self.add_project(
                "default", description="every node, dataset and analysis of this LocalNetwork"
            )

    def add_project(
        self,
        name: str,
        *,
        members: tuple[str, ...] = ("researcher",),
        nodes: tuple[str, ...] | None = None,
        datasets: tuple[str, ...] | None = None,
        analyses: tuple[str, ...] | None = None,
        approvals_required: int | None = None,
        auto_approve: tuple[str, ...] | None = None,
        expires: datetime | None = None,
        description: str = "",
    ) -> Any:
        """Create a project (by default like "default": every node, dataset and analysis)."""
        from coordinator.domain.governance import Project

        every_dataset = tuple(sorted({d for node in self.data.values() for d in node}))
        return self.coordinator.admin.create_project(
            Identity("local-network", "admin"),
            Project(
                name=name,
                description=description,
                members=members,
                nodes=tuple(self.data) if nodes is None else nodes,
                datasets=every_dataset if datasets is None else datasets,
                analyses=tuple(CATALOGUE) if analyses is None else analyses,
                approval_expires_at=expires or datetime.now(UTC) + timedelta(days=365),
                approvals_required=approvals_required or self.approvals_required,
                auto_approve=(
                    auto_approve
                    if auto_approve is not None
                    else (tuple(CATALOGUE) if analyses is None else analyses)
                    if self.auto_approve
                    else ()
                ),
                created_at=datetime.now(UTC),
                created_by="",
            ),
        )

    def add_user(
        self, name: str, role: str = "researcher", *, projects: tuple[str, ...] = ("default",)
    ) -> str:
        """Create a person (if new) with a fresh token, member of projects; return the token.

        The token also goes to pki/users/<name>/token, beside a copy of ca.pem.
        """
        from fedtre.credentials import TOKEN_FILE

        admin = self.coordinator.admin
        operator = Identity("local-network", "admin")
        if name not in {u.name for u in admin.users()}:
            admin.create_user(operator, name, role)
        for project in projects:
            admin.add_member(operator, project, name)
        _, token = admin.issue_token(operator, name, 0, "LocalNetwork")
        self.tokens[name] = token
        folder = self.pki / "users" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.pki / "ca" / "ca.pem", folder / "ca.pem")
        (folder / TOKEN_FILE).unlink(missing_ok=True)
        fd = os.open(folder / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token

    def start_agent(
        self,
        node_id: str,
        datasets: Mapping[str, Any],
        *,
        governance: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the node's data and agent config, and start its agent."""
        from node_agent.app import Agent
        from node_agent.config import AgentConfig, DatasetConfig, TlsConfig, write_config
        from node_agent.sovereignty import parse_governance

        home = self.directory / "nodes" / node_id
        home.mkdir(parents=True, exist_ok=True)
        declared = {
            name: replace(
                _dataset_config(name, value, home, DatasetConfig),
                grids=self.grids.get(name, {}),
            )
            for name, value in datasets.items()
        }
        bundle = self.pki / "nodes" / node_id
        config = write_config(
            home / "agent.toml",
            AgentConfig(
                node_id=node_id,
                coordinator=self.address,
                state_db=home / "agent-state.sqlite",
                tls=TlsConfig.from_bundle(bundle),
                datasets=declared,
                policy=self.policy,
                analyses=tuple(CATALOGUE),  # a rehearsal network serves the whole catalogue
                metrics_listen="127.0.0.1:0" if self.metrics else None,
                governance=parse_governance(
                    governance if governance is not None else self.governance.get(node_id, {})
                ),
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
        """A Client on the API port (TLS) with `user`'s token ("researcher", "approver",
        "admin", or one from add_user)."""
        return Client(self.api_address, ca=self.pki / "ca" / "ca.pem", token=self.tokens[user])

    def channel(self, user: str = "researcher") -> grpc.Channel:
        """A raw gRPC channel on the API port carrying `user`'s token (for fedtre.v1 stubs)."""
        from fedtre.credentials import person_credentials

        credentials = person_credentials(ca=self.pki / "ca" / "ca.pem", token=self.tokens[user])
        return grpc.secure_channel(self.api_address, credentials)

    def identity(self, user: str = "researcher") -> Path:
        """The identity folder of `user` (ca.pem and token; cert.pem and key.pem as well
        for "admin" and "researcher"), for the CLI's --identity."""
        return self.pki / "users" / user


def _dataset_config(name: str, value: Any, home: Path, dataset_config: Any) -> Any:
    if isinstance(value, SparkFile):
        config = _dataset_config(name, value.path, home, dataset_config)
        return replace(config, engine="spark", spark_master=value.master)
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
    if path.suffix.lower() == ".parquet":
        import duckdb

        with duckdb.connect() as conn:
            sample = conn.execute("SELECT * FROM read_parquet(?) LIMIT 1000", [str(path)]).df()
        return dataset_config(name=name, columns=column_types(sample), parquet=path)
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
        f"dataset '{name}': give a DataFrame, a .csv or .parquet file, or a SQLite file "
        f"holding table '{name}'"
    )
