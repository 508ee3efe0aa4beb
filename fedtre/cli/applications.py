"""Data Access Requests and the public Data Use Register.

    fedtre apply [--file FORM.toml|FORM.json] [--title ... --nodes a,b ...]
    fedtre applications list [--state STATE] | show ID
    fedtre applications approve ID [--comment TEXT] [--nodes ...] [--datasets ...]
                                   [--analyses ...] [--end-date YYYY-MM-DD]
    fedtre applications reject|return|withdraw ID --comment TEXT
    fedtre applications resubmit ID [--file FORM.toml] [--title ... ]
    fedtre applications publish ID DOI-OR-URL
    fedtre organisations affiliate ORGANISATION USER [--sector S] [--accredited]   (admin)
    fedtre organisations list                                                     (admin)
    fedtre register [--url http://HOST:PORT] [--csv]                              (no token)

A form file holds the application's fields (`fedtre apply --help` lists them) at its top
level; a flag given on the command line wins over the file. List fields (applicants,
funders, nodes, datasets, analyses) take comma-separated values as flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from fedtre.applications_client import FORM_FIELDS, LIST_FIELDS, ApplicationInfo
from fedtre.cli.common import add_connection_flags, connect, print_json, print_table
from fedtre.errors import InvalidRequest

DEFAULT_REGISTER_URL = "http://127.0.0.1:9464"
MAX_FORM_BYTES = 1_000_000
_HELP = {
    "applicants": "the applicants' fedtre user names (you are always one)",
    "organisation": "the organisation you apply for (an admin records its members)",
    "project_name": "the name of the project approval creates",
    "title": "the project's public title",
    "lay_summary": "what the project does, for the public",
    "public_benefit": "the public benefit statement",
    "technical_summary": "the method, for the committee",
    "funders": "the funders",
    "start_date": "YYYY-MM-DD",
    "end_date": "YYYY-MM-DD: the last day the project may use the data",
    "article6": "the UK GDPR Article 6 lawful basis, e.g. 6(1)(e)",
    "article9": "the UK GDPR Article 9 condition, e.g. 9(2)(j)",
    "duty_of_confidentiality": "how the common-law duty of confidentiality is met",
    "national_data_opt_out": "whether and how the national data opt-out is applied",
    "nodes": "the TREs (node ids) asked for",
    "datasets": "the datasets asked for",
    "analyses": "the analyses asked for",
    "linkage": "any linkage of datasets, or none",
    "expected_outputs": "the outputs you expect to publish",
}


def register(sub: argparse._SubParsersAction) -> None:
    apply = sub.add_parser("apply", help="apply for a project (a Five Safes data access request)")
    _form_flags(apply)
    add_connection_flags(apply)
    apply.set_defaults(func=_apply)

    apps = sub.add_parser("applications", help="data access requests: list, show, decide")
    actions = apps.add_subparsers(dest="applications_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the applications you may read")
    listing.add_argument("--state", default="", help="only this state, e.g. submitted")
    add_connection_flags(listing)
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="an application, its decisions and its scope")
    show.add_argument("id", type=int)
    add_connection_flags(show)
    show.set_defaults(func=_show)

    approve = actions.add_parser("approve", help="approve (committee), optionally narrowing it")
    approve.add_argument("id", type=int)
    approve.add_argument("--comment", default="")
    for name in ("nodes", "datasets", "analyses"):
        approve.add_argument(f"--{name}", default="", help=f"approve only these {name}")
    approve.add_argument("--end-date", default="", help="approve until an earlier date")
    add_connection_flags(approve)
    approve.set_defaults(func=_approve)
    for verb, help_text in (
        ("reject", "reject (committee)"),
        ("return", "return for changes (committee)"),
        ("withdraw", "withdraw an approved application: its project lapses at once"),
    ):
        action = actions.add_parser(verb, help=help_text)
        action.add_argument("id", type=int)
        action.add_argument("--comment", required=True, help="why, for the applicants")
        add_connection_flags(action)
        action.set_defaults(func=_decide, verdict=verb)

    resubmit = actions.add_parser("resubmit", help="change a returned application, submit again")
    resubmit.add_argument("id", type=int)
    _form_flags(resubmit)
    add_connection_flags(resubmit)
    resubmit.set_defaults(func=_resubmit)
    publish = actions.add_parser("publish", help="add a published output (DOI or URL)")
    publish.add_argument("id", type=int)
    publish.add_argument("publication")
    add_connection_flags(publish)
    publish.set_defaults(func=_publish)

    orgs = sub.add_parser("organisations", help="who belongs to which organisation (admin)")
    org_actions = orgs.add_subparsers(dest="organisations_command", required=True, metavar="ACTION")
    affiliate = org_actions.add_parser("affiliate", help="record a person's organisation")
    affiliate.add_argument("organisation")
    affiliate.add_argument("user")
    affiliate.add_argument("--sector", default="", help="e.g. Academia, NHS, Industry")
    affiliate.add_argument(
        "--accredited", action="store_true", help="the person is an accredited researcher"
    )
    add_connection_flags(affiliate)
    affiliate.set_defaults(func=_affiliate)
    org_list = org_actions.add_parser("list", help="every recorded affiliation")
    add_connection_flags(org_list)
    org_list.set_defaults(func=_affiliations)

    public = sub.add_parser("register", help="the public Data Use Register (no token needed)")
    public.add_argument(
        "--url",
        help="the coordinator's ops HTTP address (env FEDTRE_REGISTER_URL; "
        f"default {DEFAULT_REGISTER_URL})",
    )
    public.add_argument("--csv", action="store_true", help="print the CSV as served")
    public.add_argument("--json", action="store_true", help="print the JSON as served")
    public.set_defaults(func=_register)


def _form_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file", type=Path, help="a TOML or JSON file with the application's fields"
    )
    for name in FORM_FIELDS:
        listed = name in LIST_FIELDS
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"form_{name}",
            metavar="A,B" if listed else "YYYY-MM-DD" if name.endswith("_date") else "TEXT",
            help=_HELP[name] + (" (comma-separated)" if listed else ""),
        )


def read_form(path: Path) -> dict[str, Any]:
    """The fields of a TOML or JSON form file; raises InvalidRequest saying what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path} ({exc.strerror})") from None
    if len(raw) > MAX_FORM_BYTES:
        raise InvalidRequest(f"{path} is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise InvalidRequest(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidRequest(f"{path} must hold the application's fields at its top level")
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


def _form(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    form = dict(base or {})
    if args.file:
        form.update(read_form(args.file))
    for name in FORM_FIELDS:
        value = getattr(args, f"form_{name}")
        if value is not None:
            form[name] = [v.strip() for v in value.split(",") if v.strip()] if (
                name in LIST_FIELDS
            ) else value  # fmt: skip
    if not form:
        raise InvalidRequest("give the application: --file FORM.toml, or its fields as flags")
    return form


def _apply(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.apply(_form(args))
    _print_one(args, found, f"application {found.id} submitted to the data access committee")
    return 0


def _resubmit(args: argparse.Namespace) -> int:
    with connect(args) as client:
        current = client.applications.application(args.id)
        found = client.applications.resubmit(args.id, _form(args, current.form))
    _print_one(args, found, f"application {found.id} submitted again (version {found.version})")
    return 0


def _list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.applications(args.state)
    if args.json:
        print_json([a.as_dict() for a in found])
        return 0
    if not found:
        print("no applications you can see")
        return 0
    print_table(
        ["id", "state", "project", "organisation", "title", "approvals", "version"],
        [
            [a.id, a.state, a.form["project_name"], a.form["organisation"], a.form["title"],
             f"{_approvals(a)}/{a.approvals_required}", a.version]
            for a in found
        ],
    )  # fmt: skip
    return 0


def _show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.application(args.id)
    if args.json:
        print_json(found.as_dict())
    else:
        print("\n".join(show_lines(found)))
    return 0


def _approve(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.approve(
            args.id,
            args.comment,
            nodes=_split(args.nodes),
            datasets=_split(args.datasets),
            analyses=_split(args.analyses),
            end_date=args.end_date or None,
        )
    if found.state == "approved":
        message = f"application {found.id} approved: project {found.form['project_name']!r} created"
    else:
        message = (
            f"application {found.id}: your approval is recorded "
            f"({_approvals(found)} of {found.approvals_required})"
        )
    _print_one(args, found, message)
    return 0


def _decide(args: argparse.Namespace) -> int:
    with connect(args) as client:
        decide = {
            "reject": client.applications.reject,
            "return": client.applications.return_for_changes,
            "withdraw": client.applications.withdraw,
        }[args.verdict]
        found = decide(args.id, args.comment)
    _print_one(args, found, f"application {found.id} is now {found.state}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.add_publication(args.id, args.publication)
    _print_one(args, found, f"application {found.id}: {args.publication} is on the register")
    return 0


def _affiliate(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.set_affiliation(
            args.user, args.organisation, sector=args.sector, accredited=args.accredited
        )
    if args.json:
        print_json(found.__dict__)
    else:
        accredited = ", accredited" if found.accredited else ""
        print(f"{found.user} belongs to {found.organisation} ({found.sector or '-'}{accredited})")
    return 0


def _affiliations(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.applications.affiliations()
    if args.json:
        print_json([a.__dict__ for a in found])
        return 0
    print_table(
        ["user", "organisation", "sector", "accredited", "recorded by"],
        [
            [
                a.user,
                a.organisation,
                a.sector or "-",
                "yes" if a.accredited else "no",
                a.recorded_by,
            ]
            for a in found
        ],
    )
    return 0


def _register(args: argparse.Namespace) -> int:
    from fedtre.applications_client import read_register, register_entries

    url = args.url or os.environ.get("FEDTRE_REGISTER_URL") or DEFAULT_REGISTER_URL
    body = read_register(url, "csv" if args.csv else "json")
    if args.csv or args.json:
        sys.stdout.write(body.decode("utf-8"))
        return 0
    entries = register_entries(body)
    if not entries:
        print("the register has no approved projects yet")
        return 0
    print_table(
        ["project", "title", "organisation", "datasets", "end", "status"],
        [
            [e["project_id"], e["project_title"], e["organisation_name"],
             ", ".join(e["datasets"]), e["project_end_date"], e["status"]]
            for e in entries
        ],
    )  # fmt: skip
    return 0


def show_lines(a: ApplicationInfo) -> list[str]:
    """The application as the committee reads it."""
    f = a.form
    people = ", ".join(f"{name}{' (accredited)' if ok else ''}" for name, ok in a.applicants)
    lines = [
        f"application {a.id}: {a.state} (version {a.version}; "
        f"{_approvals(a)} of {a.approvals_required} approvals)",
        f"  people      {people} of {f['organisation']} ({a.sector or 'sector not recorded'})",
        f"  project     {f['project_name']}: {f['title']}",
        f"              {f['start_date']} to {f['end_date']}; funders {', '.join(f['funders']) or '-'}",
        f"  lay summary {f['lay_summary']}",
        f"  benefit     {f['public_benefit']}",
        f"  technical   {f['technical_summary']}",
        f"  legal basis UK GDPR Art. {f['article6']} and {f['article9']}; "
        f"confidentiality: {f['duty_of_confidentiality']}; opt-out: {f['national_data_opt_out']}",
        f"  data        nodes {', '.join(f['nodes'])}; datasets {', '.join(f['datasets'])}; "
        f"analyses {', '.join(f['analyses'])}; linkage: {f['linkage'] or '-'}",
        f"  outputs     {f['expected_outputs']}",
    ]
    if a.approved_scope:
        s = a.approved_scope
        lines.append(
            f"  approved    nodes {', '.join(s['nodes'])}; datasets {', '.join(s['datasets'])}; "
            f"analyses {', '.join(s['analyses'])}; until {s['end_date']}"
        )
    if a.publications:
        lines.append(f"  published   {', '.join(a.publications)}")
    lines.append("decisions:" if a.decisions else "decisions: none yet")
    for d in a.decisions:
        when = f"{d.at:%Y-%m-%d %H:%M} UTC" if d.at else ""
        lines.append(f"  v{d.version} {d.decision} by {d.approver} {when}: {d.comment or '-'}")
    return lines


def _print_one(args: argparse.Namespace, found: ApplicationInfo, message: str) -> None:
    if args.json:
        print_json(found.as_dict())
    else:
        print(message)


def _approvals(a: ApplicationInfo) -> int:
    return sum(1 for d in a.decisions if d.decision == "approve" and d.version == a.version)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]
