"""What the CLI's client commands share: connection flags, output as tables or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedtre.client import Client
from fedtre.errors import InvalidRequest

# The coordinator's API port (TLS, API tokens); its agent port (50051) takes people too
# when their identity folder also holds a client certificate.
DEFAULT_COORDINATOR = "127.0.0.1:50052"


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator",
        help=f"coordinator address HOST:PORT (env FEDTRE_COORDINATOR; default {DEFAULT_COORDINATOR})",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        help="your identity folder: ca.pem (the network CA) and token (your API token), as "
        "`fedtre tokens issue --out` writes them (env FEDTRE_IDENTITY)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="a file holding your API token (env FEDTRE_TOKEN_FILE, or the token itself in "
        "FEDTRE_TOKEN); never put a token on the command line",
    )
    parser.add_argument(
        "--ca", type=Path, help="the network CA certificate, ca.pem (env FEDTRE_CA)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def connect(args: argparse.Namespace) -> Client:
    """A Client from flags, then environment, then defaults.

    Raises InvalidRequest saying what to give when the CA certificate or the token is missing.
    """
    from fedtre.credentials import TOKEN_FILE, read_token_file

    target = args.coordinator or os.environ.get("FEDTRE_COORDINATOR") or DEFAULT_COORDINATOR
    identity = args.identity or os.environ.get("FEDTRE_IDENTITY")
    ca = getattr(args, "ca", None) or os.environ.get("FEDTRE_CA")
    if not identity and not ca:
        raise InvalidRequest(
            "no identity given: pass --identity DIR (or set FEDTRE_IDENTITY), a folder holding "
            "ca.pem and your API token in a file named token; or --ca FILE with --token-file FILE"
        )
    token_file = getattr(args, "token_file", None) or os.environ.get("FEDTRE_TOKEN_FILE")
    token = read_token_file(token_file) if token_file else os.environ.get("FEDTRE_TOKEN")
    if not token and not (identity and (Path(identity) / TOKEN_FILE).is_file()):
        raise InvalidRequest(
            "no API token given: pass --token-file FILE, set FEDTRE_TOKEN_FILE or FEDTRE_TOKEN, "
            f"or put it in {Path(identity) / TOKEN_FILE if identity else 'your identity folder'}"
            "; an admin issues one with `fedtre tokens issue`"
        )
    return Client(target, Path(identity) if identity else None, token=token or None, ca=ca or None)


def print_json(value: Any) -> None:
    json.dump(jsonable(value), sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def jsonable(value: Any) -> Any:
    """value for JSON output: whole numbers as integers (values cross the wire as floats),
    times as ISO 8601 with their zone (the client's naive times are UTC)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as an aligned plain-text table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
