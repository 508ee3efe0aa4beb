"""`fedtre agent audit`: verify or export the agent's own hash-chained audit log.

    fedtre agent audit verify --config agent.toml
    fedtre agent audit export --config agent.toml [--since N] [--out FILE]
    fedtre agent audit checkpoint --config agent.toml --out FILE

Run inside the TRE, beside the agent: they read its state database directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from fedtre.cli.common import print_json
from fedtre.files import open_private


def register(agent_sub: argparse._SubParsersAction) -> None:
    audit = agent_sub.add_parser("audit", help="the agent's audit log: verify, export")
    actions = audit.add_subparsers(dest="agent_audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="walk the chain; report the first altered, deleted or reordered entry"
    )
    verify.add_argument("--config", required=True, type=Path, help="the agent's TOML config")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=_verify)
    export = actions.add_parser("export", help="write the log as JSON lines (for a SIEM)")
    export.add_argument("--config", required=True, type=Path, help="the agent's TOML config")
    export.add_argument("--since", type=int, default=0)
    export.add_argument("--out", type=Path)
    export.set_defaults(func=_export)
    checkpoint = actions.add_parser(
        "checkpoint",
        help="write the newest coordinator audit checkpoint this agent countersigned "
        "(check the coordinator's log against it with `fedtre audit verify --checkpoint`)",
    )
    checkpoint.add_argument("--config", required=True, type=Path, help="the agent's TOML config")
    checkpoint.add_argument("--out", required=True, type=Path, help="the file to write (0600)")
    checkpoint.set_defaults(func=_checkpoint)


def _state(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from node_agent.config import load_config
    from node_agent.state import AgentState

    return AgentState(load_config(args.config).state_db)


def _verify(args: argparse.Namespace) -> int:
    from node_agent import audit

    with _state(args) as state:
        report = audit.verify(state.engine)
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "entries": report.entries,
                "broken_at": report.broken_at,
                "problem": report.problem,
                "head": report.head_hash,
            }
        )
    elif report.ok:
        print(f"agent audit log intact: {report.entries} entries; head {report.head_hash}")
    else:
        print(f"agent audit log BROKEN at entry {report.broken_at}: {report.problem}")
        print(f"({report.entries} entries verified before it)")
    return 0 if report.ok else 1


def _checkpoint(args: argparse.Namespace) -> int:
    from fedtre import checkpoints
    from fedtre.errors import InvalidRequest
    from node_agent.checkpoints import newest_seen
    from node_agent.config import load_config
    from node_agent.state import AgentState

    config = load_config(args.config)
    with AgentState(config.state_db) as state:
        signed = newest_seen(state, config.node_id, config.tls.cert.read_bytes())
    if signed is None:
        raise InvalidRequest("this agent has countersigned no coordinator checkpoint yet")
    checkpoints.write_file(args.out, signed)
    size = checkpoints.parse(signed.data).size
    print(f"wrote the coordinator's checkpoint of {size} entries to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from node_agent import audit

    count = 0
    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(open_private(args.out, encoding="utf-8"))
            if args.out
            else sys.stdout
        )
        with _state(args) as state:
            for entry in audit.entries(state.engine, args.since):
                out.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")
                count += 1
    if args.out:
        print(f"wrote {count} audit entries to {args.out}", file=sys.stderr)
    return 0
