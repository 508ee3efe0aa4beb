"""Commands that run the long-lived services: the coordinator and a node agent."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from fedtre import logs


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
        "--tls-dir",
        type=Path,
        help="folder with the coordinator's ca.pem, cert.pem and key.pem (env FEDTRE_TLS_DIR)",
    )
    serve.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve every job on submission: for rehearsal networks only",
    )
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=_serve)

    agent = sub.add_parser("agent", help="run a node agent inside a TRE")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = agent_sub.add_parser("run", help="connect out to the coordinator and serve tasks")
    run.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_agent_run)


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
        database_url=args.database_url
        or os.environ.get("FEDTRE_DATABASE_URL")
        or "sqlite:///coordinator.sqlite",
        auto_approve=args.auto_approve,
    )
    asyncio.run(serve_forever(config))
    return 0


def _agent_run(args: argparse.Namespace) -> int:
    from node_agent.app import Agent
    from node_agent.config import load_config

    logs.configure(args.log_level)
    Agent(load_config(args.config)).run_forever()
    return 0
