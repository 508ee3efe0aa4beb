"""Researcher and admin commands: submit, jobs, result, nodes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from fedtre.analyses import CATALOGUE
from fedtre.analyses.filters import parse_filter_text
from fedtre.cli.common import add_connection_flags, connect, jsonable, print_json, print_table
from fedtre.client import Client, JobStatus, Result
from fedtre.errors import InvalidRequest
from fedtre.notebook import node_outcome
from fedtre.problems import problem_lines
from fedtre.report import result_lines


def register(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="submit an analysis to the network")
    submit.add_argument("analysis", help="catalogue name: " + ", ".join(CATALOGUE))
    submit.add_argument("--dataset", required=True, help="dataset name, as `fedtre nodes` lists it")
    submit.add_argument(
        "--nodes",
        default="",
        help="comma-separated node ids (default: every node with the dataset)",
    )
    submit.add_argument(
        "--project",
        help="the project the job belongs to (default: your only project; `fedtre whoami` "
        "lists yours)",
    )
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an analysis parameter, e.g. --param rows=sex or --param covariates=age,sex,bmi "
        "(a comma-separated list); VALUE is read as JSON when it parses",
    )
    submit.add_argument("--params", help="all parameters as one JSON object")
    submit.add_argument("--filter", help="""a filter, e.g. 'age >= 40 and sex == "F"'""")
    submit.add_argument(
        "--dry-run", action="store_true", help="check against every node; queue nothing"
    )
    submit.add_argument(
        "--no-wait", action="store_true", help="print the job id and return at once"
    )
    submit.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for the result"
    )
    submit.add_argument(
        "--deadline",
        type=int,
        default=None,
        metavar="SECONDS",
        help="seconds each node has to answer once the job runs; a node that has not answered "
        "by then is timed out and the job finishes without it (default: the coordinator's)",
    )
    submit.add_argument(
        "--on-pause",
        choices=("wait", "partial"),
        default=None,
        help="when a TRE pauses its agent for maintenance: wait for it (its deadline extended "
        "by the pause; the default) or finish without it (partial)",
    )
    add_connection_flags(submit)
    submit.set_defaults(func=_submit)

    jobs = sub.add_parser("jobs", help="list, show, approve or reject jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    listing = jobs_sub.add_parser("list", help="list recent jobs")
    listing.add_argument("--state", help="only jobs in this state, e.g. pending_approval")
    listing.add_argument("--project", help="only jobs of this project")
    listing.add_argument("--node", help="only jobs addressed to this node")
    listing.add_argument("--limit", type=int, default=50)
    add_connection_flags(listing)
    listing.set_defaults(func=_jobs_list)
    show = jobs_sub.add_parser("show", help="show one job and its per-node tasks")
    show.add_argument("job_id", type=int)
    add_connection_flags(show)
    show.set_defaults(func=_jobs_show)
    approve = jobs_sub.add_parser("approve", help="approve a pending job (admin)")
    approve.add_argument("job_id", type=int)
    add_connection_flags(approve)
    approve.set_defaults(func=_jobs_approve)
    reject = jobs_sub.add_parser("reject", help="reject a pending job (admin)")
    reject.add_argument("job_id", type=int)
    reject.add_argument("--reason", required=True)
    add_connection_flags(reject)
    reject.set_defaults(func=_jobs_reject)
    cancel = jobs_sub.add_parser(
        "cancel", help="cancel a job that has not finished (its submitter, approvers, admins)"
    )
    cancel.add_argument("job_id", type=int)
    cancel.add_argument("--reason", default="", help="why, for the job's record")
    add_connection_flags(cancel)
    cancel.set_defaults(func=_jobs_cancel)

    result = sub.add_parser("result", help="show a job's combined result and per-node outcomes")
    result.add_argument("job_id", type=int)
    result.add_argument("--wait", action="store_true", help="wait until the job has finished")
    result.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: stop waiting after this many seconds (exit 2; the job goes on)",
    )
    result.add_argument(
        "--plot",
        metavar="FILE.png",
        help="kaplan_meier: also draw the survival curves to this PNG file (needs matplotlib)",
    )
    result.add_argument(
        "--package",
        metavar="FILE.zip",
        type=Path,
        help="also write the job's release package (Five Safes RO-Crate in a BagIt bag: the "
        "request, each node's checks and signature, the result); check it with "
        "`fedtre verify-package`",
    )
    add_connection_flags(result)
    result.set_defaults(func=_result)

    nodes = sub.add_parser("nodes", help="list nodes, their status and datasets")
    add_connection_flags(nodes)
    nodes.set_defaults(func=_nodes)


def build_params(args: argparse.Namespace) -> dict[str, Any]:
    """Analysis parameters from --params, --param and --filter; raise InvalidRequest if malformed."""
    params: dict[str, Any] = {}
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"--params is not valid JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise InvalidRequest('--params must be a JSON object, e.g. \'{"rows": "sex"}\'')
    analysis = CATALOGUE.get(args.analysis)
    list_params = analysis.list_params if analysis is not None else frozenset()
    for item in args.param:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--param {item!r} is not KEY=VALUE, e.g. --param rows=sex")
        value = _param_value(text)
        params[key] = [value] if key in list_params and not isinstance(value, list) else value
    if args.filter:
        params["filter"] = parse_filter_text(args.filter)
    return params


def _param_value(text: str) -> Any:
    """A --param VALUE: JSON when it parses, a list when comma-separated, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [_param_value(item.strip()) for item in text.split(",") if item.strip()]
    return text


def _project(args: argparse.Namespace, client: Client) -> str:
    """--project, or the person's only project; raise InvalidRequest listing theirs."""
    if args.project:
        return str(args.project)
    _, _, projects = client.admin.whoami()
    if len(projects) == 1:
        if not args.json:
            print(f"project {projects[0]} (your only project)", file=sys.stderr)
        return projects[0]
    if not projects:
        raise InvalidRequest(
            "you are not a member of any project yet: an admin adds you with "
            "`fedtre projects add-member PROJECT YOUR-NAME`"
        )
    raise InvalidRequest(
        f"give --project: you are a member of {', '.join(projects)} (e.g. --project {projects[0]})"
    )


def _warn_offline(client: Client, targets: tuple[str, ...]) -> None:
    """Say on stderr which of the job's nodes are not online: their tasks wait for them."""
    for node in client.nodes():
        if node.node_id in targets and node.status != "online":
            seen = f", last seen {node.last_seen:%Y-%m-%d %H:%M} UTC" if node.last_seen else ""
            print(
                f"warning: node {node.node_id} is {node.status}{seen}; its task waits until "
                "it is back (or until the job's deadline)",
                file=sys.stderr,
            )


def _submit(args: argparse.Namespace) -> int:
    params = build_params(args)
    nodes = [n for n in args.nodes.split(",") if n]
    with connect(args) as client:
        project = _project(args, client)
        if args.dry_run:
            report = client.submit(
                args.analysis,
                dataset=args.dataset,
                params=params,
                nodes=nodes,
                project=project,
                dry_run=True,
            )
            if args.json:
                print_json(
                    {
                        "ok": report.ok,
                        "problems": [{"node": n, "message": m} for n, m in report.problems],
                    }
                )
            elif report.ok:
                print("dry run: no problems; the job would be accepted")
            else:
                lines = problem_lines(report.problems)
                print(f"dry run: {len(lines)} problem(s):")
                for line in lines:
                    print(f"  - {line}")
            return 0 if report.ok else 1
        handle = client.submit(
            args.analysis,
            dataset=args.dataset,
            params=params,
            nodes=nodes,
            project=project,
            deadline=args.deadline,
            on_pause=args.on_pause,
            request_id=str(uuid.uuid4()),
        )
        status = handle.status()
        _warn_offline(client, status.nodes)
        if args.no_wait:
            if args.json:
                print_json({"job_id": handle.id, "state": status.state})
            else:
                print(f"job {handle.id} submitted: {status.state}")
            return 0
        if not args.json:
            print(f"job {handle.id} submitted", file=sys.stderr)
        status = handle.wait(timeout=args.timeout, progress=None if args.json else _progress)
        _print_result(Result(status), args.json)
        return 0 if status.state in ("completed", "partial") else 1


def _progress(status: JobStatus) -> None:
    total = len(status.nodes)
    line = f"job {status.id}: {status.state.replace('_', ' ')}, {status.done_count}/{total} nodes answered"
    if status.held_count:
        line += f", {status.held_count} held for review by the TRE's output checker"
    if status.progress is not None:
        line += f", {status.progress.describe()}"
    if status.state == "pending_approval":
        line = (
            f"job {status.id}: awaiting approval by an approver "
            f"(Ctrl-C stops waiting; the job stays submitted: `fedtre result {status.id} --wait`)"
        )
    if sys.stderr.isatty():
        end = "\n" if status.finished else ""
        print(f"\r\033[K{line}", end=end, file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _status_row(job: JobStatus) -> list[Any]:
    return [
        job.id,
        job.state,
        job.project,
        job.analysis,
        job.dataset,
        ",".join(job.nodes),
        job.submitted_by,
        job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    ]


def _job_json(job: JobStatus) -> dict[str, Any]:
    data = dataclasses.asdict(job)
    data["tasks"] = {
        node: {
            "state": t.state,
            "outcome": t.outcome,
            "error": t.error,
            "payload": t.payload,
            "rules": [dataclasses.asdict(r) for r in t.rules],
        }
        for node, t in job.tasks.items()
    }
    return data


def _jobs_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        jobs = client.jobs(state=args.state, limit=args.limit, project=args.project, node=args.node)
    if args.json:
        print_json([_job_json(j) for j in jobs])
    elif not jobs:
        print("no jobs")
    else:
        print_table(
            [
                "id",
                "state",
                "project",
                "analysis",
                "dataset",
                "nodes",
                "submitted by",
                "created (UTC)",
            ],
            [_status_row(j) for j in jobs],
        )
    return 0


def _print_job(job: JobStatus) -> None:
    print(f"job {job.id}: {job.state}")
    print(f"  analysis  {job.analysis} on dataset '{job.dataset}' (project {job.project})")
    print(f"  params    {json.dumps(jsonable(job.params), sort_keys=True)}")
    print(f"  submitted {job.created_at:%Y-%m-%d %H:%M:%S} UTC by {job.submitted_by}")
    if job.decided_by:
        print(f"  decided   by {job.decided_by}")
    if job.cause:
        # why a job did not complete, once (a rejection's reason, or the nodes' one cause)
        print(f"  why       {job.cause}")
    if job.progress is not None:
        print(f"  progress  {job.progress.describe()}")
    if job.tasks:
        print()
        print_table(
            ["node", "task", "outcome", "rules failed"],
            [
                [n, t.state, node_outcome(job, t), _failed_rules(t.rules) or t.error or "-"]
                for n, t in job.tasks.items()
            ],
        )


def _failed_rules(rules: Any) -> str:
    return "; ".join(f"{r.rule}: {r.detail}" for r in rules if not r.passed)


def _jobs_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.job(args.job_id)
    if args.json:
        print_json(_job_json(job))
    else:
        _print_job(job)
    return 0


def _jobs_approve(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.approve(args.job_id)
    if args.json:
        print_json(_job_json(job))
    elif job.state == "pending_approval":
        given, needed = len(job.approved_by), job.approvals_required
        print(
            f"job {job.id}: your approval is recorded ({given} of {needed}); it runs once "
            f"{needed - given} more approver(s) approve"
        )
    else:
        print(f"job {job.id} approved: {job.state.replace('_', ' ')}")
    return 0


def _jobs_reject(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.reject(args.job_id, args.reason)
    print_json(_job_json(job)) if args.json else print(f"job {job.id} rejected")
    return 0


def _jobs_cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.cancel(args.job_id, args.reason)
    print_json(_job_json(job)) if args.json else print(f"job {job.id} cancelled")
    return 0


def _print_result(result: Result, as_json: bool) -> None:
    if as_json:
        print_json(_job_json(result.job))
        return
    _print_job(result.job)
    print()
    if not result.job.finished:
        print("no combined result yet; the job is still", result.state)
        return
    print("combined result:")
    for line in result_lines(result, with_cause=False):  # _print_job said why
        print(line)


def _result(args: argparse.Namespace) -> int:
    with connect(args) as client:
        handle = client.handle(args.job_id)
        status = (
            handle.wait(timeout=args.timeout, progress=None if args.json else _progress)
            if args.wait
            else handle.status()
        )
    _print_result(Result(status), args.json)
    if getattr(args, "plot", None):
        from fedtre.plot import plot_survival

        plot_survival(Result(status), args.plot)
        if not args.json:
            print(f"survival curves drawn to {args.plot}")
    if getattr(args, "package", None):
        from fedtre.package.build import write_package

        write_package(status, args.package)
        if not args.json:
            print(f"release package written to {args.package}")
    return 0


def _nodes(args: argparse.Namespace) -> int:
    with connect(args) as client:
        nodes = client.nodes()
    if args.json:
        print_json([dataclasses.asdict(n) for n in nodes])
        return 0
    if not nodes:
        print("no nodes have connected yet")
        return 0
    print_table(
        ["node", "status", "last seen (UTC)", "datasets", "analyses"],
        [
            [
                n.node_id,
                n.status,
                n.last_seen.strftime("%Y-%m-%d %H:%M:%S") if n.last_seen else None,
                "; ".join(
                    f"{d.name}({', '.join(f'{c}:{t}' for c, t in d.columns.items())})"
                    for d in n.datasets
                ),
                ",".join(n.analyses),
            ]
            for n in nodes
        ],
    )
    return 0
