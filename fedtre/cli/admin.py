"""Governance commands: people, API tokens, projects, the audit log, and who you are.

    fedtre whoami
    fedtre users add NAME [--role researcher|approver|admin]
    fedtre users list | disable NAME | enable NAME
    fedtre tokens issue USER --out DIR|--token-out FILE [--days N] [--description TEXT]
    fedtre tokens list [USER] | revoke TOKEN_ID
    fedtre projects create NAME --expires DATE [--starts DATE] --nodes ... --datasets ...
        --analyses ...
    fedtre projects show NAME | list | update NAME ... | add-member NAME USER | remove-member ...
    fedtre audit verify [--database-url URL]   (through the API as an admin, or offline)
    fedtre audit verify --checkpoint FILE --verify-key job-signing-pub.pem [--ca ca.pem]
        (--ca: also check that each countersigner's certificate is the network CA's)
    fedtre audit checkpoint --out FILE [--database-url URL]
    fedtre audit export [--since N] [--database-url URL]

A new token is written to a file (0600), never printed: a token on a terminal ends up in
scroll-back and shell history.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from fedtre.cli.common import add_connection_flags, connect, print_json, print_table
from fedtre.errors import InvalidRequest
from fedtre.files import copy_private, open_private

ROLES = ("researcher", "approver", "admin")


def register(sub: argparse._SubParsersAction) -> None:
    whoami = sub.add_parser("whoami", help="who your token says you are, and your projects")
    add_connection_flags(whoami)
    whoami.set_defaults(func=_whoami)

    _register_users(sub)
    _register_tokens(sub)
    _register_projects(sub)
    _register_audit(sub)


# -- people ---------------------------------------------------------------------------


def _register_users(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="people and their roles (admin)")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a person")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="researcher")
    add_connection_flags(add)
    add.set_defaults(func=_users_add)
    listing = actions.add_parser("list", help="list people")
    add_connection_flags(listing)
    listing.set_defaults(func=_users_list)
    for verb, disabled in (("disable", True), ("enable", False)):
        action = actions.add_parser(
            verb, help=f"{verb} a person (a disabled person's tokens stop working at once)"
        )
        action.add_argument("name")
        add_connection_flags(action)
        action.set_defaults(func=_users_disable, disabled=disabled)


def _users_add(args: argparse.Namespace) -> int:
    with connect(args) as client:
        user = client.admin.create_user(args.name, args.role)
    if args.json:
        print_json(dataclasses.asdict(user))
    else:
        print(
            f"added {user.role} {user.name}; issue a token with `fedtre tokens issue {user.name}`"
        )
    return 0


def _users_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        users = client.admin.users()
    if args.json:
        print_json([dataclasses.asdict(u) for u in users])
        return 0
    print_table(
        ["name", "role", "status", "created (UTC)", "by"],
        [
            [
                u.name,
                u.role,
                "disabled" if u.disabled else "active",
                _when(u.created_at),
                u.created_by,
            ]
            for u in users
        ],
    )
    return 0


def _users_disable(args: argparse.Namespace) -> int:
    with connect(args) as client:
        user = client.admin.set_disabled(args.name, args.disabled)
    if args.json:
        print_json(dataclasses.asdict(user))
    else:
        print(f"{user.name} is {'disabled' if user.disabled else 'active'}")
    return 0


# -- tokens ---------------------------------------------------------------------------


def _register_tokens(sub: argparse._SubParsersAction) -> None:
    tokens = sub.add_parser("tokens", help="API tokens: issue, list, revoke (admin)")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    issue = actions.add_parser(
        "issue", help="issue a person a new token, written to a file only they may read"
    )
    issue.add_argument("user")
    where = issue.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write an identity folder: DIR/token (0600) and DIR/ca.pem, for --identity DIR",
    )
    where.add_argument("--token-out", type=Path, metavar="FILE", help="write only the token")
    issue.add_argument("--days", type=int, default=0, help="valid for N days (0: no expiry)")
    issue.add_argument("--description", default="", help="what the token is for")
    add_connection_flags(issue)
    issue.set_defaults(func=_tokens_issue)

    listing = actions.add_parser("list", help="tokens (their ids, never the secrets)")
    listing.add_argument("user", nargs="?")
    add_connection_flags(listing)
    listing.set_defaults(func=_tokens_list)

    revoke = actions.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id")
    add_connection_flags(revoke)
    revoke.set_defaults(func=_tokens_revoke)


def _tokens_issue(args: argparse.Namespace) -> int:
    from fedtre.credentials import TOKEN_FILE, write_token_file

    target = args.out / TOKEN_FILE if args.out else args.token_out
    if target.exists():
        raise InvalidRequest(f"{target} already exists; remove it or choose another path")
    with connect(args) as client:
        record, token = client.admin.issue_token(
            args.user, valid_days=args.days, description=args.description
        )
    written = write_token_file(target, token)
    if args.out:
        ca = _own_ca(args)
        if ca is not None and not (args.out / "ca.pem").exists():
            copy_private(ca, args.out / "ca.pem")
    if args.json:
        print_json({**dataclasses.asdict(record), "token_file": str(written)})
    else:
        print(f"issued token {record.token_id} for {record.user}: {written} (mode 0600)")
        print("Send it to them over a secure channel; the coordinator keeps only its hash.")
    return 0


def _own_ca(args: argparse.Namespace) -> Path | None:
    import os

    if getattr(args, "ca", None):
        return Path(args.ca)
    if os.environ.get("FEDTRE_CA"):
        return Path(os.environ["FEDTRE_CA"])
    identity = args.identity or os.environ.get("FEDTRE_IDENTITY")
    if identity and (Path(identity) / "ca.pem").is_file():
        return Path(identity) / "ca.pem"
    return None


def _tokens_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        tokens = client.admin.tokens(args.user)
    if args.json:
        print_json([dataclasses.asdict(t) for t in tokens])
        return 0
    print_table(
        ["token", "user", "status", "created (UTC)", "expires", "last used", "description"],
        [
            [
                t.token_id,
                t.user,
                "revoked" if t.revoked else "active",
                _when(t.created_at),
                _when(t.expires_at) if t.expires_at else "never",
                _when(t.last_used_at),
                t.description,
            ]
            for t in tokens
        ],
    )
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    with connect(args) as client:
        record = client.admin.revoke_token(args.token_id)
    if args.json:
        print_json(dataclasses.asdict(record))
    else:
        print(f"token {record.token_id} of {record.user} is revoked")
    return 0


# -- projects -------------------------------------------------------------------------


def _register_projects(sub: argparse._SubParsersAction) -> None:
    projects = sub.add_parser("projects", help="projects: members, scope, approval policy")
    actions = projects.add_subparsers(dest="projects_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a project (admin)")
    create.add_argument("name")
    _project_fields(create, required=True)
    create.add_argument("--members", type=_csv, default=[], help="comma-separated user names")
    add_connection_flags(create)
    create.set_defaults(func=_projects_create)

    update = actions.add_parser("update", help="change a project's scope or policy (admin)")
    update.add_argument("name")
    _project_fields(update, required=False)
    add_connection_flags(update)
    update.set_defaults(func=_projects_update)

    show = actions.add_parser("show", help="show a project")
    show.add_argument("name")
    add_connection_flags(show)
    show.set_defaults(func=_projects_show)

    listing = actions.add_parser("list", help="the projects you can see")
    add_connection_flags(listing)
    listing.set_defaults(func=_projects_list)

    for verb in ("add-member", "remove-member"):
        action = actions.add_parser(verb, help=f"{verb.replace('-', ' ')} (admin)")
        action.add_argument("name")
        action.add_argument("user")
        add_connection_flags(action)
        action.set_defaults(func=_projects_member, add=verb == "add-member")


def _project_fields(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--expires",
        type=_date,
        required=required,
        help="when the project's data-access approval lapses (YYYY-MM-DD, end of day UTC)",
    )
    parser.add_argument(
        "--starts",
        type=_start_date,
        help="when its data-access approval starts (YYYY-MM-DD, start of day UTC; "
        "default: at once): no job runs before it",
    )
    parser.add_argument("--nodes", type=_csv, required=required, help="nodes it may use")
    parser.add_argument("--datasets", type=_csv, required=required, help="datasets it may use")
    parser.add_argument(
        "--analyses", type=_csv, required=required, help="analyses it may run, e.g. count,crosstab"
    )
    parser.add_argument(
        "--approvals",
        type=int,
        dest="approvals_required",
        help="approvers each job needs (default 1; never its submitter)",
    )
    parser.add_argument(
        "--auto-approve",
        type=_csv,
        help="analyses approved automatically on submission (e.g. count)",
    )
    parser.add_argument("--description")


def _projects_create(args: argparse.Namespace) -> int:
    with connect(args) as client:
        project = client.admin.create_project(
            args.name,
            expires=args.expires,
            nodes=args.nodes,
            datasets=args.datasets,
            analyses=args.analyses,
            members=args.members,
            approvals_required=args.approvals_required or 1,
            auto_approve=args.auto_approve or (),
            description=args.description or "",
            starts=args.starts,
        )
    _print_project(project, args.json)
    return 0


def _projects_update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for key in ("nodes", "datasets", "analyses", "approvals_required", "auto_approve"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.expires is not None:
        changes["expires"] = args.expires
    if args.starts is not None:
        changes["starts"] = args.starts
    if args.description is not None:
        changes["description"] = args.description
    if not changes:
        raise InvalidRequest(
            "nothing to change: give --expires, --starts, --nodes, --datasets, --analyses, --approvals, "
            "--auto-approve or --description"
        )
    with connect(args) as client:
        project = client.admin.update_project(args.name, **changes)
    _print_project(project, args.json)
    return 0


def _projects_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        project = client.admin.project(args.name)
    _print_project(project, args.json)
    return 0


def _projects_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        projects = client.admin.projects()
    if args.json:
        print_json([dataclasses.asdict(p) for p in projects])
        return 0
    print_table(
        ["project", "approval until", "approvals", "members", "nodes", "datasets"],
        [
            [
                p.name,
                _when(p.approval_expires_at),
                p.approvals_required,
                ",".join(p.members),
                ",".join(p.nodes),
                ",".join(p.datasets),
            ]
            for p in projects
        ],
    )
    return 0


def _projects_member(args: argparse.Namespace) -> int:
    with connect(args) as client:
        admin = client.admin
        project = (
            admin.add_member(args.name, args.user)
            if args.add
            else admin.remove_member(args.name, args.user)
        )
    _print_project(project, args.json)
    return 0


def _print_project(project: Any, as_json: bool) -> None:
    if as_json:
        print_json(dataclasses.asdict(project))
        return
    now = datetime.now(UTC)
    lapsed = project.approval_expires_at is not None and project.approval_expires_at <= now
    waiting = project.starts_at is not None and now < project.starts_at
    since = f"from {_when(project.starts_at)} " if project.starts_at else ""
    flag = " (LAPSED)" if lapsed else " (NOT STARTED)" if waiting else ""
    print(f"project {project.name}" + (f": {project.description}" if project.description else ""))
    print(f"  approval  {since}until {_when(project.approval_expires_at)}{flag}")
    policy = f"{project.approvals_required} approver(s), never the submitter"
    if project.auto_approve:
        policy += f"; automatic for {', '.join(project.auto_approve)}"
    print(f"  policy    {policy}")
    print(f"  members   {', '.join(project.members) or '-'}")
    print(f"  nodes     {', '.join(project.nodes)}")
    print(f"  datasets  {', '.join(project.datasets)}")
    print(f"  analyses  {', '.join(project.analyses)}")


# -- audit ----------------------------------------------------------------------------


def _register_audit(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="the coordinator's hash-chained audit log (admin)")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="walk the chain; report the first altered, deleted or reordered entry"
    )
    verify.add_argument(
        "--checkpoint",
        type=Path,
        help="also fail unless the log still holds what this signed checkpoint recorded "
        "(written by `fedtre audit checkpoint` or `fedtre agent audit checkpoint`)",
    )
    verify.add_argument(
        "--verify-key",
        type=Path,
        help="the network's job-signing-pub.pem, to check the checkpoint's signature "
        "(needed with --checkpoint)",
    )
    _database_flags(verify)
    add_connection_flags(verify)
    verify.set_defaults(func=_audit_verify)
    checkpoint = actions.add_parser(
        "checkpoint",
        help="write the newest signed checkpoint of the log, with the agents' countersignatures",
    )
    checkpoint.add_argument("--out", type=Path, required=True, help="the file to write (0600)")
    _database_flags(checkpoint)
    add_connection_flags(checkpoint)
    checkpoint.set_defaults(func=_audit_checkpoint)
    export = actions.add_parser("export", help="write the log as JSON lines (for a SIEM)")
    export.add_argument("--since", type=int, default=0, help="only entries after this one")
    export.add_argument("--out", type=Path, help="write to this file (default: stdout)")
    _database_flags(export)
    add_connection_flags(export)
    export.set_defaults(func=_audit_export)


def _database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="read the coordinator's database directly (offline check), not through the API",
    )
    parser.add_argument("--database-url-file", type=Path, help="the database URL, from a file")


def _offline_store(args: argparse.Namespace) -> Any:
    if not (args.database_url or args.database_url_file):
        return None
    from coordinator.store.store import Store
    from fedtre.cli.services import _database_url

    return Store(_database_url(args))


def _audit_verify(args: argparse.Namespace) -> int:
    checked, signers = _checkpoint_of(args)
    store = _offline_store(args)
    if store is not None:
        try:
            if checked is None:
                report = store.governance.verify_audit()
            else:
                from coordinator.store.checkpoints import CheckpointStore

                report = CheckpointStore(store).check(checked.size, checked.head)
        finally:
            store.close()
        ok, entries, broken, problem, head = (
            report.ok, report.entries, report.broken_at, report.problem, report.head_hash,
        )  # fmt: skip
    else:
        with connect(args) as client:
            r = client.admin.verify_audit(None if checked is None else (checked.size, checked.head))
        ok, entries, broken, problem, head = r.ok, r.entries, r.broken_at, r.problem, r.head_hash
    if args.json:
        print_json(
            {"ok": ok, "entries": entries, "broken_at": broken, "problem": problem, "head": head}
        )
    elif ok:
        print(f"audit log intact: {entries} entries; head {head}")
        if checked is not None:
            by = f"; countersigned by {', '.join(signers)}" if signers else ""
            print(f"it holds the {checked.size} entries of the checkpoint of {checked.at}{by}")
    else:
        print(f"audit log BROKEN at entry {broken}: {problem}")
        print(f"({entries} entries verified before it)")
    return 0 if ok else 1


def _checkpoint_of(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The checkpoint of --checkpoint, its signature checked, and who countersigned it."""
    if args.checkpoint is None:
        return None, []
    from cryptography import x509

    from fedtre import checkpoints
    from fedtre.identity.signing import Verifier, load_verify_key

    if args.verify_key is None:
        raise InvalidRequest(
            "--checkpoint needs --verify-key: the network's job-signing-pub.pem (beside the "
            "CA certificate, and in every node's bundle) checks the checkpoint's signature"
        )
    signed = checkpoints.read_file(args.checkpoint)
    checkpoint = signed.verified(Verifier(load_verify_key(args.verify_key)))
    ca = None
    if getattr(args, "ca", None) is not None:
        try:
            ca = x509.load_pem_x509_certificate(args.ca.read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"cannot read the CA certificate {args.ca}") from exc
    return checkpoint, signed.countersigned_by(ca)


def _audit_checkpoint(args: argparse.Namespace) -> int:
    from fedtre import checkpoints

    store = _offline_store(args)
    if store is not None:
        from coordinator.store.checkpoints import CheckpointStore

        try:
            signed = CheckpointStore(store).latest_signed()
        finally:
            store.close()
    else:
        with connect(args) as client:
            signed = checkpoints.latest_in(client.admin.export_audit())
    if signed is None:
        raise InvalidRequest(
            "the coordinator has published no checkpoint yet; it does within "
            "ten minutes of the log growing"
        )
    checkpoints.write_file(args.out, signed)
    checkpoint = checkpoints.parse(signed.data)
    signers = ", ".join(c.node for c in signed.countersignatures) or "no agent yet"
    print(
        f"wrote the checkpoint of {checkpoint.size} entries ({checkpoint.at}; countersigned "
        f"by {signers}) to {args.out}"
    )
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    store = _offline_store(args)
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.callback(store.close)
        out = (
            stack.enter_context(open_private(args.out, encoding="utf-8"))
            if args.out
            else sys.stdout
        )
        if store is not None:
            entries: Any = (e.to_json() for e in store.governance.audit_entries(args.since))
        else:
            client = connect(args)
            entries = client.admin.export_audit(args.since)
        count = 0
        for entry in entries:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
            count += 1
    if args.out:
        print(f"wrote {count} audit entries to {args.out}", file=sys.stderr)
    return 0


# -- helpers --------------------------------------------------------------------------


def _whoami(args: argparse.Namespace) -> int:
    with connect(args) as client:
        name, role, projects = client.admin.whoami()
    if args.json:
        print_json({"name": name, "role": role, "projects": list(projects)})
    else:
        print(f"{name} ({role}); projects: {', '.join(projects) or 'none'}")
    return 0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _date(text: str) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from exc
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def _start_date(text: str) -> datetime:
    return _date(text).replace(hour=0, minute=0, second=0)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"
