"""`fedtre catalogue list|show|export`: the datasets the TREs advertise, as their operators describe them."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from fedtre.catalogue import hdruk
from fedtre.catalogue.entry import CatalogueEntry
from fedtre.cli.common import add_connection_flags, connect, print_json, print_table
from fedtre.errors import InvalidRequest, NotFound
from fedtre.files import private_dir, write_private

FORMATS = (hdruk.FORMAT,)


def register(sub: argparse._SubParsersAction) -> None:
    catalogue = sub.add_parser("catalogue", help="the datasets the TREs advertise")
    actions = catalogue.add_subparsers(dest="catalogue_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="one line per dataset per TRE")
    add_connection_flags(listing)
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="a dataset's description and columns, per TRE")
    show.add_argument("dataset")
    show.add_argument("--node", help="only this TRE's entry")
    add_connection_flags(show)
    show.set_defaults(func=_show)
    export = actions.add_parser(
        "export", help="write one metadata record per described dataset per TRE"
    )
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument(
        "--out",
        type=Path,
        help="a folder to write <node>--<dataset>.json into (created 0700, files 0600); "
        "default: one JSON array on stdout",
    )
    add_connection_flags(export)
    export.set_defaults(func=_export)


def _entries(args: argparse.Namespace) -> list[CatalogueEntry]:
    with connect(args) as client:
        return client.catalogue()


def _list(args: argparse.Namespace) -> int:
    entries = _entries(args)
    if args.json:
        print_json([e.to_json() for e in entries])
        return 0
    if not entries:
        print("no TRE has advertised a dataset yet")
        return 0
    print_table(
        ["dataset", "node", "status", "title", "columns"],
        [
            [
                e.dataset.name,
                e.node,
                "online" if e.online else "offline",
                e.title or "(not described)",
                len(e.dataset.columns),
            ]
            for e in entries
        ],
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    entries = [
        e
        for e in _entries(args)
        if e.dataset.name == args.dataset and (args.node is None or e.node == args.node)
    ]
    if not entries:
        where = f" on node {args.node!r}" if args.node else ""
        raise NotFound(
            f"no TRE advertises a dataset {args.dataset!r}{where}; "
            "`fedtre catalogue list` shows what they advertise"
        )
    if args.json:
        print_json([e.to_json() for e in entries])
        return 0
    for i, entry in enumerate(entries):
        if i:
            print()
        _print_entry(entry)
    return 0


def _print_entry(entry: CatalogueEntry) -> None:
    about = entry.dataset.description
    print(f"{entry.dataset.name} on {entry.node} ({'online' if entry.online else 'offline'})")
    if about is None:
        print("  not described by its TRE's operator")
    else:
        end = about.temporal_end.isoformat() if about.temporal_end else "ongoing"
        for label, value in (
            ("title", about.title),
            ("abstract", about.abstract),
            ("custodian", about.custodian),
            ("contact", about.contact),
            ("keywords", ", ".join(about.keywords) or "-"),
            ("coverage", f"{about.temporal_start.isoformat()} to {end}; {about.spatial_coverage}"),
            ("access", about.access_rights),
        ):
            print(f"  {label + ':':<11}{value}")
    print("  columns:")
    for name, typ in entry.dataset.columns.items():
        col = entry.dataset.column_descriptions.get(name)
        parts = [f"    {name} ({typ})"]
        if col is not None:
            if col.description:
                parts.append(col.description)
            if col.unit:
                parts.append(f"unit: {col.unit}")
            if col.labels:
                parts.append("codes: " + ", ".join(f"{k} = {v}" for k, v in col.labels.items()))
            if col.sensitive:
                parts.append("sensitive")
        print("; ".join(parts))


def _export(args: argparse.Namespace) -> int:
    issued = dt.datetime.now(dt.UTC)
    records: list[tuple[CatalogueEntry, dict[str, object]]] = []
    for entry in _entries(args):
        if not entry.described:
            print(
                f"skipped {entry.dataset.name} on {entry.node}: not described by its TRE's "
                "operator (title, abstract, ... in agent.toml)",
                file=sys.stderr,
            )
            continue
        records.append((entry, entry.hdruk_record(issued)))
    if not records:
        raise InvalidRequest(
            "no TRE has described a dataset, so there is nothing to export; each operator "
            "adds title, abstract, custodian, contact, temporal_coverage, spatial_coverage "
            "and access_rights to [datasets.<name>] in agent.toml"
        )
    if args.out is None:
        json.dump([r for _, r in records], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    folder = private_dir(args.out)
    for entry, document in records:
        path = folder / f"{entry.node}--{entry.dataset.name}.json"
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        write_private(path, text.encode("utf-8"))
        print(path)
    return 0
