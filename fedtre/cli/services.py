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
    serve.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    serve.set_defaults(func=_serve)

    agent = sub.add_parser("agent", help="run a node agent inside a TRE")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = agent_sub.add_parser("run", help="connect out to the coordinator and serve tasks")
    run.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    run.set_defaults(func=_agent_run)
    from fedtre.cli import inbox

    inbox.register(agent_sub)  # the output checker's airlock: `fedtre agent inbox ...`


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
    )
    if config.metrics_listen:
        parse_listen(config.metrics_listen, "--metrics-listen")
    asyncio.run(serve_forever(config))
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
