"""Commands that run the long-lived services: the coordinator and a node agent."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

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
        "--api-listen",
        help="HOST:PORT for people's API calls: TLS with API tokens, no client certificate "
        "(env FEDTRE_API_LISTEN; default 127.0.0.1:50052; 'off' serves none)",
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

    agent = sub.add_parser("agent", help="run a node agent inside a TRE")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = agent_sub.add_parser("run", help="connect out to the coordinator and serve tasks")
    run.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    run.set_defaults(func=_agent_run)
    from fedtre.cli import inbox

    inbox.register(agent_sub)  # the output checker's airlock: `fedtre agent inbox ...`
    from fedtre.cli import agent_audit

    agent_audit.register(agent_sub)  # `fedtre agent audit verify|export`


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
            "that `fedtre network init` wrote; the coordinator never serves without TLS"
        )
    config = CoordinatorConfig(
        tls=TlsFiles.from_dir(Path(tls_dir)),
        listen=args.listen or os.environ.get("FEDTRE_LISTEN") or "127.0.0.1:50051",
        database_url=_database_url(args),
        auto_approve=args.auto_approve,
        metrics_listen=args.metrics_listen or os.environ.get("FEDTRE_METRICS_LISTEN") or None,
        api_listen=_api_listen(args),
    )
    if config.metrics_listen:
        parse_listen(config.metrics_listen, "--metrics-listen")
    asyncio.run(serve_forever(config))
    return 0


def _api_listen(args: argparse.Namespace) -> str | None:
    value = args.api_listen or os.environ.get("FEDTRE_API_LISTEN") or "127.0.0.1:50052"
    if value.lower() == "off":
        return None
    parse_listen(value, "--api-listen")
    return str(value)


def _bootstrap_admin(args: argparse.Namespace) -> int:
    import shutil

    from coordinator.admin import Admin
    from coordinator.store.store import Store
    from fedtre.credentials import TOKEN_FILE, write_token_file
    from fedtre.errors import InvalidRequest

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
        shutil.copyfile(Path(tls_dir) / "ca.pem", args.out / "ca.pem")
    print(f"created admin {user.name} with token {record.token_id}: {target} (mode 0600)")
    print(f"use it with --identity {args.out} (or FEDTRE_IDENTITY={args.out})")
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
