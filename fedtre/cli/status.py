"""`fedtre status`: the network at a glance for admins (nodes, queues, jobs, recent failures)."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime

from fedtre.cli.common import add_connection_flags, connect, print_json, print_table
from fedtre.client import NetworkStatus

# The order an admin reads job states in: what needs them first.
_JOB_STATES = (
    "pending_approval",
    "running",
    "completed",
    "partial",
    "failed",
    "rejected",
    "cancelled",
)


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser(
        "status", help="nodes online/offline, queue depths, jobs by state, recent failures (admin)"
    )
    status.add_argument(
        "--failures", type=int, default=10, help="how many recent task failures to show"
    )
    add_connection_flags(status)
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.network_status(recent_failures=args.failures)
    if args.json:
        print_json(dataclasses.asdict(status))
    else:
        print_status(status, datetime.now(UTC).replace(tzinfo=None))
    return 0


def print_status(status: NetworkStatus, now: datetime) -> None:
    """Print status as text; now is naive UTC, like the status's times."""
    online = sum(1 for n in status.nodes if n.online)
    print(f"nodes: {online} online, {len(status.nodes) - online} offline")
    if status.nodes:
        print_table(
            ["node", "status", "last seen (UTC)", "queued", "delivered", "oldest waiting"],
            [
                [
                    n.node_id,
                    "online" if n.online else "OFFLINE",
                    _time(n.last_seen),
                    n.queued,
                    n.delivered,
                    _age(
                        min(
                            (t for t in (n.oldest_queued_at, n.oldest_delivered_at) if t),
                            default=None,
                        ),
                        now,
                    ),
                ]
                for n in status.nodes
            ],
        )
    print()
    counts = [f"{state.replace('_', ' ')} {status.jobs.get(state, 0)}" for state in _JOB_STATES]
    print("jobs: " + ", ".join(counts))
    print()
    if not status.recent_failures:
        print("recent failures: none")
        return
    print("recent failures:")
    print_table(
        ["job", "node", "analysis", "outcome", "reported (UTC)", "error"],
        [
            [f.job_id, f.node, f.analysis, f.outcome, _time(f.reported_at), f.error]
            for f in status.recent_failures
        ],
    )


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None


def _age(since: datetime | None, now: datetime) -> str | None:
    if since is None:
        return None
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
