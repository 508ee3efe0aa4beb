"""What the CLI's client commands share: connection flags, output as tables or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedtre.client import Client
from fedtre.errors import InvalidRequest

DEFAULT_COORDINATOR = "127.0.0.1:50051"


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator",
        help=f"coordinator address HOST:PORT (env FEDTRE_COORDINATOR; default {DEFAULT_COORDINATOR})",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        help="folder holding your ca.pem, cert.pem and key.pem from `fedtre network init` "
        "(env FEDTRE_IDENTITY)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def connect(args: argparse.Namespace) -> Client:
    """A Client from flags, then environment, then defaults."""
    target = args.coordinator or os.environ.get("FEDTRE_COORDINATOR") or DEFAULT_COORDINATOR
    identity = args.identity or os.environ.get("FEDTRE_IDENTITY")
    if not identity:
        raise InvalidRequest(
            "no identity given: pass --identity DIR (or set FEDTRE_IDENTITY), a folder with the "
            "ca.pem, cert.pem and key.pem that `fedtre network init` wrote for you under users/"
        )
    return Client(target, Path(identity))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


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
