"""`fedtre network`: create a network's CA and issue its identities."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtre.identity.ca import (
    CA_FILE,
    CERT_FILE,
    DEFAULT_COORDINATOR_HOSTS,
    KEY_FILE,
    init_network,
    issue_node,
    issue_user,
)
from fedtre.identity.peer import USER_ROLES

_BUNDLE = f"{CA_FILE}, {CERT_FILE}, {KEY_FILE}"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `network init`, `network add-node` and `network add-user`."""
    network = sub.add_parser("network", help="create the network's CA and identities")
    actions = network.add_subparsers(dest="network_command", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init", help="create a CA and certificates for the coordinator, nodes and users"
    )
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument(
        "--nodes", required=True, type=_csv, help="comma-separated node ids, e.g. tre-a,tre-b"
    )
    init.add_argument(
        "--users",
        type=_csv,
        default=["admin", "researcher"],
        help="comma-separated user names; 'admin' is the admin (default: admin,researcher)",
    )
    init.add_argument(
        "--hosts",
        type=_csv,
        default=list(DEFAULT_COORDINATOR_HOSTS),
        help="comma-separated DNS names and IPs the coordinator is reached at "
        f"(default: {','.join(DEFAULT_COORDINATOR_HOSTS)})",
    )
    init.add_argument(
        "--days", type=int, default=365, help="validity of the identities (default: 365)"
    )
    init.set_defaults(func=handle_init)

    add_node = actions.add_parser("add-node", help="issue one more node's enrolment bundle")
    add_node.add_argument("directory", type=Path, metavar="DIR")
    add_node.add_argument("node_id", metavar="NODE")
    add_node.add_argument("--days", type=int, default=365)
    add_node.set_defaults(func=handle_add_node)

    add_user = actions.add_parser("add-user", help="issue one more user's bundle")
    add_user.add_argument("directory", type=Path, metavar="DIR")
    add_user.add_argument("name", metavar="NAME")
    add_user.add_argument("--role", choices=USER_ROLES, default="researcher")
    add_user.add_argument("--days", type=int, default=365)
    add_user.set_defaults(func=handle_add_user)


def handle_init(args: argparse.Namespace) -> int:
    """Create the network; print where each bundle went and who should receive it."""
    paths = init_network(
        args.directory,
        args.nodes,
        users=args.users,
        coordinator_hosts=args.hosts,
        validity_days=args.days,
    )
    rows = [
        ("CA certificate", f"{paths.ca_cert}", ""),
        ("CA key", f"{paths.ca_key}", "keep offline; only the admin needs it"),
        ("coordinator", f"{paths.coordinator}/", "for the coordinator host"),
    ]
    rows += [
        (f"node {node}", f"{folder}/", f"hand to the operator of TRE {node}")
        for node, folder in paths.nodes.items()
    ]
    rows += [(f"user {name}", f"{folder}/", f"for {name}") for name, folder in paths.users.items()]
    label_width = max(len(label) for label, _, _ in rows)
    path_width = max(len(path) for _, path, _ in rows)
    print(f"Created a fedtre network in {paths.directory}")
    for label, path, note in rows:
        print(f"  {label:<{label_width}}  {path:<{path_width}}  {note}".rstrip())
    _print_footer()
    return 0


def handle_add_node(args: argparse.Namespace) -> int:
    """Issue one node's bundle; print its folder and who should receive it."""
    folder = issue_node(args.directory, args.node_id, validity_days=args.days)
    print(f"Issued node {args.node_id}: {folder}/")
    print(f"Hand this folder to the operator of TRE {args.node_id}.")
    _print_footer()
    return 0


def handle_add_user(args: argparse.Namespace) -> int:
    """Issue one user's bundle; print its folder."""
    folder = issue_user(args.directory, args.name, args.role, validity_days=args.days)
    print(f"Issued {args.role} {args.name}: {folder}/")
    _print_footer()
    return 0


def _print_footer() -> None:
    print(f"Each folder holds {_BUNDLE}. {KEY_FILE} is private (mode 0600): send a folder")
    print("only to its owner, over a secure channel, and never share it between identities.")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
