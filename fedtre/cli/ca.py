"""`fedtre ca`: the network CA, node enrolment and the certificate lifecycle.

    fedtre ca init DIR --nodes tre-a,tre-b --hosts coord.example.org   CA, coordinator, nodes,
                                                                       job-signing key
    fedtre ca issue-node DIR NODE                           one more TRE's enrolment bundle
    fedtre ca issue-coordinator DIR --hosts NAME,...        the coordinator's certificate for
                                                            the names it is reached at
    fedtre ca renew DIR NODE [--revoke-old]                 a new key and certificate (rotation)
    fedtre ca revoke DIR NODE                               revoke NODE's certificate (CRL)
    fedtre ca signing-key DIR                               add the job-signing key to an old network

A node's bundle (DIR/nodes/NODE/) holds exactly what its agent needs: ca.pem, its own
cert.pem and key.pem, and job-signing-pub.pem (the key it pins to check approvals).
Issuing, renewing or revoking one node never touches another node's files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtre.identity.ca import DEFAULT_COORDINATOR_HOSTS, init_network, issue_node
from fedtre.identity.lifecycle import (
    add_signing_key,
    reissue_coordinator,
    renew_node,
    revoke_node,
)

_HOSTS = (
    "comma-separated DNS names and IP addresses the coordinator is reached at, by agents "
    "and people alike, e.g. coordinator.example.org,10.0.0.5 (default: "
    f"{','.join(DEFAULT_COORDINATOR_HOSTS)}, for a network on one machine)"
)


def register(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser(
        "ca", help="the network CA: init, issue-coordinator, issue-node, renew, revoke"
    )
    actions = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init", help="create the CA, the coordinator's certificate and signing key, and nodes"
    )
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--nodes", type=_csv, default=[], help="comma-separated node ids")
    init.add_argument("--hosts", type=_csv, default=list(DEFAULT_COORDINATOR_HOSTS), help=_HOSTS)
    init.add_argument("--days", type=int, default=365, help="certificate validity (days)")
    init.set_defaults(func=_init)

    coordinator = actions.add_parser(
        "issue-coordinator",
        help="re-issue the coordinator's certificate for the names it is reached at",
    )
    coordinator.add_argument("directory", type=Path, metavar="DIR")
    coordinator.add_argument("--hosts", type=_csv, required=True, help=_HOSTS)
    coordinator.add_argument("--days", type=int, default=365, help="certificate validity (days)")
    coordinator.set_defaults(func=_issue_coordinator)

    issue = actions.add_parser("issue-node", help="issue one TRE's enrolment bundle")
    issue.add_argument("directory", type=Path, metavar="DIR")
    issue.add_argument("node_id", metavar="NODE")
    issue.add_argument("--days", type=int, default=365)
    issue.set_defaults(func=_issue)

    renew = actions.add_parser(
        "renew", help="a new key and certificate for NODE; its agent picks them up by itself"
    )
    renew.add_argument("directory", type=Path, metavar="DIR")
    renew.add_argument("node_id", metavar="NODE")
    renew.add_argument("--days", type=int, default=365)
    renew.add_argument(
        "--revoke-old", action="store_true", help="also revoke the certificate it replaces"
    )
    renew.set_defaults(func=_renew)

    revoke = actions.add_parser(
        "revoke", help="revoke NODE's certificate: the coordinator refuses it at once"
    )
    revoke.add_argument("directory", type=Path, metavar="DIR")
    revoke.add_argument("node_id", metavar="NODE")
    revoke.set_defaults(func=_revoke)

    signing = actions.add_parser(
        "signing-key", help="give a network created before signed approvals its signing key"
    )
    signing.add_argument("directory", type=Path, metavar="DIR")
    signing.set_defaults(func=_signing_key)


def _init(args: argparse.Namespace) -> int:
    paths = init_network(
        args.directory,
        args.nodes,
        users=(),
        coordinator_hosts=args.hosts,
        validity_days=args.days,
    )
    print(f"Created a fedtre network in {paths.directory}")
    print(f"  coordinator certificate for: {', '.join(args.hosts)}")
    print(f"  CA key        {paths.ca_key}  keep offline; only the CA admin needs it")
    print(f"  coordinator   {paths.coordinator}/  its TLS files and job-signing key (0600)")
    for node, folder in paths.nodes.items():
        print(f"  node {node:<8} {folder}/  hand to the operator of TRE {node}")
    print("Next: create the first admin on the coordinator's database, then start it:")
    print(
        f"  fedtre coordinator bootstrap-admin admin --tls-dir {paths.coordinator} "
        "--database-url URL --out DIR"
    )
    return 0


def _issue(args: argparse.Namespace) -> int:
    folder = issue_node(args.directory, args.node_id, validity_days=args.days)
    print(f"Issued node {args.node_id}: {folder}/ (ca.pem, cert.pem, key.pem, job-signing-pub.pem)")
    print(f"Hand this folder, and nothing else, to the operator of TRE {args.node_id}.")
    return 0


def _issue_coordinator(args: argparse.Namespace) -> int:
    folder = reissue_coordinator(args.directory, args.hosts, validity_days=args.days)
    print(f"Issued the coordinator a new certificate for {', '.join(args.hosts)}: {folder}/")
    print("Restart the coordinator to serve it; agents and people need nothing new.")
    return 0


def _renew(args: argparse.Namespace) -> int:
    folder = renew_node(
        args.directory, args.node_id, validity_days=args.days, revoke_old=args.revoke_old
    )
    print(f"Renewed node {args.node_id}: new cert.pem and key.pem in {folder}/")
    print("Copy them over the agent's; it reconnects with them by itself (no restart).")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    done = revoke_node(args.directory, args.node_id)
    print(f"Revoked node {done.node_id}'s certificate (serial {done.serial:x}).")
    for path in done.crl_files:
        print(f"  wrote {path}")
    print(
        "The coordinator re-reads crl.pem beside its certificate within a second; copy the "
        "list there if it runs elsewhere."
    )
    return 0


def _signing_key(args: argparse.Namespace) -> int:
    path = add_signing_key(args.directory)
    print(f"Wrote the job-signing key {path} (0600) and job-signing-pub.pem into every bundle.")
    print("Give each TRE operator its node's job-signing-pub.pem.")
    return 0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
