"""Commands that run the long-lived services: the coordinator and a node agent."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from fedtre import logs
from fedtre.ops_http import parse_listen

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def register(sub: argparse._SubParsersAction) -> None:
    coordinator = sub.add_parser("coordinator", help="run the coordinator")
    coordinator_sub = coordinator.add_subparsers(
        dest="coordinator_command", required=True, metavar="ACTION"
    )
    serve = coordinator_sub.add_parser(
        "serve", help="serve the coordinator's gRPC API (mutual TLS)"
    )
    serve.add_argument(
        "--listen", help="HOST:PORT to listen on (env FEDTRE_LISTEN; default 127.0.0.1:50051)"
    )
    serve.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the state database (env FEDTRE_DATABASE_URL; "
        "default sqlite:///coordinator.sqlite)",
    )
    serve.add_argument(
        "--database-url-file",
        type=Path,
        help="a file holding the database URL, so its password stays out of the process list "
        "(env FEDTRE_DATABASE_URL_FILE)",
    )
    serve.add_argument(
        "--metrics-listen",
        help="HOST:PORT to serve /metrics, /livez and /readyz on, plain HTTP "
        "(env FEDTRE_METRICS_LISTEN; default: not served)",
    )
    serve.add_argument(
        "--tls-dir",
        type=Path,
        help="folder with the coordinator's ca.pem, cert.pem and key.pem (env FEDTRE_TLS_DIR)",
    )
    serve.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve every job on submission: for rehearsal networks only",
    )
    serve.add_argument(
        "--committee-approvals",
        type=int,
        help="how many approvers of the data access committee must approve an application "
        "before it becomes a project (env FEDTRE_COMMITTEE_APPROVALS; default 1)",
    )
    serve.add_argument(
        "--api-listen",
        help="HOST:PORT for people's API calls: TLS with API tokens, no client certificate "
        "(env FEDTRE_API_LISTEN; default 127.0.0.1:50052; 'off' serves none)",
    )
    serve.add_argument(
        "--default-deadline",
        type=int,
        metavar="SECONDS",
        help="seconds each node has to answer a job that names no deadline "
        "(env FEDTRE_DEFAULT_DEADLINE; default 3600)",
    )
    serve.add_argument(
        "--offline-after",
        type=float,
        metavar="SECONDS",
        help="seconds without a heartbeat after which a node is shown offline "
        "(env FEDTRE_OFFLINE_AFTER; default 60; keep it above --ping-interval)",
    )
    serve.add_argument(
        "--ping-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between pings (heartbeats) on an idle task stream "
        "(env FEDTRE_PING_INTERVAL; default 15)",
    )
    serve.add_argument(
        "--tick-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between the scheduler's checks of deadlines and heartbeats "
        "(env FEDTRE_TICK_INTERVAL; default 5)",
    )
    serve.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    serve.set_defaults(func=_serve)

    bootstrap = coordinator_sub.add_parser(
        "bootstrap-admin",
        help="create the first admin and write their token (only while there is no admin)",
    )
    bootstrap.add_argument("name", help="the admin's user name, e.g. admin")
    bootstrap.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="identity folder to write: DIR/token (0600) and DIR/ca.pem",
    )
    bootstrap.add_argument(
        "--tls-dir", type=Path, help="the coordinator's folder, for its ca.pem (env FEDTRE_TLS_DIR)"
    )
    bootstrap.add_argument("--database-url", help="as for serve (env FEDTRE_DATABASE_URL)")
    bootstrap.add_argument("--database-url-file", type=Path, help="as for serve")
    bootstrap.set_defaults(func=_bootstrap_admin)

    migrate = coordinator_sub.add_parser(
        "migrate",
        help="bring the state database's schema to this version (back it up first); serve "
        "refuses a database that needs it",
    )
    migrate.add_argument("--database-url", help="as for serve (env FEDTRE_DATABASE_URL)")
    migrate.add_argument("--database-url-file", type=Path, help="as for serve")
    migrate.set_defaults(func=_migrate)

    agent = sub.add_parser("agent", help="run a node agent inside a TRE")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = agent_sub.add_parser("run", help="connect out to the coordinator and serve tasks")
    run.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    run.set_defaults(func=_agent_run)
    pause = agent_sub.add_parser(
        "pause",
        help="pause this agent for maintenance: it takes no new tasks until resumed "
        "(researchers see the node as paused)",
    )
    pause.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    pause.add_argument("--reason", default="", help="why, for the agent's audit log")
    pause.set_defaults(func=_agent_pause)
    resume = agent_sub.add_parser("resume", help="end a maintenance pause")
    resume.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    resume.set_defaults(func=_agent_resume)
    from fedtre.cli import inbox

    inbox.register(agent_sub)  # the output checker's airlock: `fedtre agent inbox ...`
    from fedtre.cli import agent_audit

    agent_audit.register(agent_sub)  # `fedtre agent audit verify|export`
    from fedtre.cli import portal

    portal.register_agent(agent_sub)  # this TRE's page: `fedtre agent portal`


def _serve(args: argparse.Namespace) -> int:
    from coordinator.config import CoordinatorConfig
    from coordinator.server import serve_forever
    from fedtre.errors import InvalidRequest
    from fedtre.identity.tls import TlsFiles

    logs.configure(args.log_level)
    tls_dir = args.tls_dir or os.environ.get("FEDTRE_TLS_DIR")
    if not tls_dir:
        raise InvalidRequest(
            "no TLS folder: pass --tls-dir DIR (or set FEDTRE_TLS_DIR), e.g. the coordinator/ folder "
            "that `fedtre ca init` wrote; the coordinator never serves without TLS"
        )
    config = CoordinatorConfig(
        tls=TlsFiles.from_dir(Path(tls_dir)),
        listen=args.listen or os.environ.get("FEDTRE_LISTEN") or "127.0.0.1:50051",
        database_url=_database_url(args),
        auto_approve=args.auto_approve,
        committee_approvals=_committee_approvals(args),
        metrics_listen=args.metrics_listen or os.environ.get("FEDTRE_METRICS_LISTEN") or None,
        api_listen=_api_listen(args),
        **_timing(args),
    )
    if config.ping_interval >= config.offline_after:
        raise InvalidRequest(
            f"--offline-after ({config.offline_after:g} s) must be longer than --ping-interval "
            f"({config.ping_interval:g} s), or connected nodes are shown offline between pings"
        )
    if config.metrics_listen:
        parse_listen(config.metrics_listen, "--metrics-listen")
    asyncio.run(serve_forever(config))
    return 0


def _committee_approvals(args: argparse.Namespace) -> int:
    from fedtre.errors import InvalidRequest

    value = args.committee_approvals
    if value is None:
        text = os.environ.get("FEDTRE_COMMITTEE_APPROVALS", "1")
        if not text.strip().isdigit():
            raise InvalidRequest("FEDTRE_COMMITTEE_APPROVALS must be a whole number, 1 to 10")
        value = int(text)
    if not 1 <= value <= 10:
        raise InvalidRequest(f"--committee-approvals must be 1 to 10, not {value}")
    return int(value)


def _timing(args: argparse.Namespace) -> dict[str, Any]:
    """The timers' settings given by flag or environment (the rest keep their defaults)."""
    from fedtre.errors import InvalidRequest

    found: dict[str, Any] = {}
    for name, kind in (
        ("default_deadline", int),
        ("offline_after", float),
        ("ping_interval", float),
        ("tick_interval", float),
    ):
        value = getattr(args, name)
        env = f"FEDTRE_{name.upper()}"
        if value is None and os.environ.get(env):
            try:
                value = kind(os.environ[env])
            except ValueError:
                raise InvalidRequest(f"{env} must be a number of seconds") from None
        if value is not None:
            if value <= 0:
                raise InvalidRequest(f"--{name.replace('_', '-')} must be more than 0 seconds")
            found[name] = value
    return found


def _api_listen(args: argparse.Namespace) -> str | None:
    value = args.api_listen or os.environ.get("FEDTRE_API_LISTEN") or "127.0.0.1:50052"
    if value.lower() == "off":
        return None
    parse_listen(value, "--api-listen")
    return str(value)


def _bootstrap_admin(args: argparse.Namespace) -> int:
    from coordinator.admin import Admin
    from coordinator.store.store import Store
    from fedtre.credentials import TOKEN_FILE, write_token_file
    from fedtre.errors import InvalidRequest
    from fedtre.files import copy_private

    target = args.out / TOKEN_FILE
    if target.exists():
        raise InvalidRequest(f"{target} already exists; choose another --out folder")
    store = Store(_database_url(args))
    try:
        user, record, token = Admin(store).bootstrap_admin(args.name)
    finally:
        store.close()
    write_token_file(target, token)
    tls_dir = args.tls_dir or os.environ.get("FEDTRE_TLS_DIR")
    if tls_dir and (Path(tls_dir) / "ca.pem").is_file():
        copy_private(Path(tls_dir) / "ca.pem", args.out / "ca.pem")
    print(f"created admin {user.name} with token {record.token_id}: {target} (mode 0600)")
    print(f"use it with --identity {args.out} (or FEDTRE_IDENTITY={args.out})")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from coordinator.store import migrate
    from coordinator.store.engine import create_engine

    engine = create_engine(_database_url(args))
    try:
        done = migrate.upgrade(engine)
    finally:
        engine.dispose()
    if done.adopted:
        print(f"adopted a database from before migrations at revision {done.after}")
    elif done.before == done.after:
        print(f"the database is already at revision {done.after}; nothing to do")
    else:
        print(f"migrated the database from {done.before or 'empty'} to revision {done.after}")
    return 0


def _database_url(args: argparse.Namespace) -> str:
    """The state database URL: flags, then environment, then the SQLite default.

    The *_FILE forms read the URL from a file (e.g. a mounted Kubernetes Secret).
    """
    from fedtre.errors import InvalidRequest

    if args.database_url and args.database_url_file:
        raise InvalidRequest("give --database-url or --database-url-file, not both")
    url, path = args.database_url, args.database_url_file
    if not url and not path:
        url = os.environ.get("FEDTRE_DATABASE_URL")
        path = os.environ.get("FEDTRE_DATABASE_URL_FILE")
        if url and path:
            raise InvalidRequest("set FEDTRE_DATABASE_URL or FEDTRE_DATABASE_URL_FILE, not both")
    if path:
        try:
            url = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidRequest(
                f"cannot read the database URL file {path} ({exc.strerror}); check the path "
                "and that the coordinator's user may read it"
            ) from exc
        if not url:
            raise InvalidRequest(f"the database URL file {path} is empty")
    return url or "sqlite:///coordinator.sqlite"


def _agent_run(args: argparse.Namespace) -> int:
    from node_agent.app import Agent
    from node_agent.config import load_config

    logs.configure(args.log_level)
    Agent(load_config(args.config)).run_forever()
    return 0


def _agent_pause(args: argparse.Namespace) -> int:
    import getpass

    from node_agent.config import load_config
    from node_agent.state import AgentState

    with AgentState(load_config(args.config).state_db) as state:
        pause = state.pause(getpass.getuser(), args.reason)
    print(
        f"agent paused by {pause.by} since {pause.since:%Y-%m-%d %H:%M:%S} UTC; a running agent "
        "takes no new tasks within seconds (tasks already running finish). "
        f"`fedtre agent resume --config {args.config}` ends the pause"
    )
    return 0


def _agent_resume(args: argparse.Namespace) -> int:
    import getpass

    from node_agent.config import load_config
    from node_agent.state import AgentState

    with AgentState(load_config(args.config).state_db) as state:
        resumed = state.resume(getpass.getuser())
    print("agent resumed: it takes tasks again" if resumed else "the agent was not paused")
    return 0
