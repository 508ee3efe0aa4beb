"""`fedtre portal serve` (the network's web portal) and `fedtre agent portal` (a TRE's page).

    fedtre portal serve --coordinator HOST:PORT --ca ca.pem [--register-url URL]
                        [--listen 127.0.0.1:8080] [--tls-cert cert.pem --tls-key key.pem]
    fedtre agent portal --config agent.toml [--token-file FILE] [--listen 127.0.0.1:8081]
                        [--tls-cert cert.pem --tls-key key.pem]

Without --tls-cert/--tls-key each serves plain HTTP on loopback only, to sit behind a
TLS-terminating reverse proxy on the same host; any other address needs the TLS files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtre.errors import InvalidRequest


def register(sub: argparse._SubParsersAction) -> None:
    portal = sub.add_parser("portal", help="the network's web portal (a client of the coordinator)")
    actions = portal.add_subparsers(dest="portal_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve the portal")
    serve.add_argument(
        "--coordinator", required=True, help="the coordinator's API address, host:port"
    )
    serve.add_argument("--ca", required=True, type=Path, help="the network CA certificate (ca.pem)")
    serve.add_argument(
        "--register-url",
        help="the coordinator's ops HTTP server (its --metrics-listen), e.g. "
        "http://127.0.0.1:9464: the public Data Use Register and dataset catalogue",
    )
    _listen(serve, "127.0.0.1:8080")
    serve.set_defaults(func=_serve)


def register_agent(agent_sub: argparse._SubParsersAction) -> None:
    """Add `portal` to the `fedtre agent` sub-commands."""
    tre = agent_sub.add_parser(
        "portal", help="this TRE's page: the output checker's airlock, the operator's inbox"
    )
    tre.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    tre.add_argument(
        "--token-file",
        type=Path,
        help="the page's sign-in token (default: portal-token beside the config; created 0600 "
        "if missing)",
    )
    _listen(tre, "127.0.0.1:8081")
    tre.set_defaults(func=_agent_portal)


def _listen(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--listen", default=default, help=f"host:port (default {default})")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="and this private key (PEM)")


def _serve(args: argparse.Namespace) -> int:
    from fedtre.portal.coordinator_app import PortalConfig, create_app

    listen = _listen_address(args)
    if not args.ca.is_file():
        raise InvalidRequest(f"--ca {args.ca}: no such file; give the network's ca.pem")
    app = create_app(PortalConfig(args.coordinator, args.ca, args.register_url))
    return _run(app, args, listen)


def _agent_portal(args: argparse.Namespace) -> int:
    from fedtre.portal.tre_app import TrePortalConfig, create_app, ensure_token

    listen = _listen_address(args)
    if not args.config.is_file():
        raise InvalidRequest(f"--config {args.config}: no such file; give the agent's agent.toml")
    token_file = args.token_file or args.config.parent / "portal-token"
    if ensure_token(token_file):
        print(f"created the page's sign-in token in {token_file} (0600); give it to checkers")
    return _run(create_app(TrePortalConfig(args.config, token_file)), args, listen)


def _listen_address(args: argparse.Namespace) -> tuple[str, int, bool]:
    """(host, port, tls) from --listen and the TLS files; plain HTTP on loopback only."""
    from fedtre.portal.web import require_loopback_without_tls

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"--listen {args.listen!r}: give host:port, e.g. 127.0.0.1:8080")
    tls = bool(args.tls_cert or args.tls_key)
    if tls and not (args.tls_cert and args.tls_key):
        raise InvalidRequest("give both --tls-cert and --tls-key")
    require_loopback_without_tls(host.strip("[]"), tls)
    return host.strip("[]"), int(port), tls


def _run(app: object, args: argparse.Namespace, listen: tuple[str, int, bool]) -> int:
    import uvicorn

    host, port, tls = listen
    scheme = "https" if tls else "http (behind your TLS proxy)"
    print(f"serving on {scheme} {args.listen}")
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        ssl_certfile=str(args.tls_cert) if tls else None,
        ssl_keyfile=str(args.tls_key) if tls else None,
        log_level="warning",
        proxy_headers=False,
    )
    return 0
