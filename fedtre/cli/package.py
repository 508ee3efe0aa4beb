"""`fedtre verify-package`: check a release package's manifests and every node's signature."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedtre.errors import InvalidRequest


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser(
        "verify-package",
        help="check a release package (fedtre result ID --package) against the network CA",
    )
    check.add_argument("package", type=Path, help="the package, FILE.zip")
    check.add_argument(
        "--ca",
        type=Path,
        help="the network CA certificate, ca.pem (env FEDTRE_CA, or ca.pem in FEDTRE_IDENTITY); "
        "never the certificates inside the package",
    )
    check.set_defaults(func=_verify)


def _ca(args: argparse.Namespace) -> Path:
    if args.ca:
        return Path(args.ca)
    if os.environ.get("FEDTRE_CA"):
        return Path(os.environ["FEDTRE_CA"])
    if os.environ.get("FEDTRE_IDENTITY"):
        return Path(os.environ["FEDTRE_IDENTITY"]) / "ca.pem"
    raise InvalidRequest(
        "no CA certificate given: pass --ca ca.pem (the network CA, as `fedtre tokens issue` "
        "wrote it into your identity folder), or set FEDTRE_CA or FEDTRE_IDENTITY"
    )


def _verify(args: argparse.Namespace) -> int:
    from fedtre.package.verify import PackageInvalid, verify_package

    if not args.package.is_file():
        raise InvalidRequest(f"{args.package} does not exist; give the path of a package .zip")
    try:
        job_id, nodes = verify_package(args.package, _ca(args))
    except PackageInvalid as exc:
        print(f"{args.package}: does NOT verify: {exc}", file=sys.stderr)
        return 1
    print(f"{args.package}: verified: job {job_id}, manifests intact")
    for check in nodes:
        if check.statement is None:
            print(f"  {check.node}: {check.outcome}, nothing released, nothing signed")
            continue
        version = check.statement.dataset_version or "not declared"
        print(
            f"  {check.node}: {check.outcome}, signed by node {check.node} (agent "
            f"{check.statement.agent_version}, dataset version {version}), checks included"
        )
    return 0
