"""`fedtre agent inbox`: the TRE output checker's airlock for held outputs.

    fedtre agent inbox list    --config agent.toml [--all] [--json]
    fedtre agent inbox show    TASK --config agent.toml [--json]
    fedtre agent inbox approve TASK --config agent.toml [--reason TEXT] [--checker NAME]
    fedtre agent inbox deny    TASK --config agent.toml --reason TEXT [--checker NAME]

TASK is a task id or a unique prefix of one, or the id of an approval request ("r-...":
a project or job waiting for the TRE operator's approval, node_agent.approvals), which
list shows above the held outputs. The commands read and write the agent's
state database directly (inside the TRE, beside the running agent), which sends an
approved output, or the denial, within a second or so. `review`, `release` and
`reject` are aliases of `inbox`, `approve` and `deny`.
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedtre.cli import inbox_requests
from fedtre.cli.common import print_json, print_table
from fedtre.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from node_agent.state import AgentState, Review


def register(agent_sub: argparse._SubParsersAction) -> None:
    """Add `inbox` (alias `review`) to the `fedtre agent` sub-commands."""
    inbox = agent_sub.add_parser(
        "inbox",
        aliases=["review"],
        help="outputs held for the TRE's output checker: list, show, approve, deny",
    )
    actions = inbox.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="held outputs awaiting a decision")
    listing.add_argument("--all", action="store_true", help="include decided outputs")
    _common(listing)
    listing.set_defaults(func=_list)

    show = actions.add_parser("show", help="what would leave, with the rules checked")
    show.add_argument("task", help="task id (or a unique prefix)")
    _common(show)
    show.set_defaults(func=_show)

    approve = actions.add_parser(
        "approve", aliases=["release"], help="release a held output to the researcher"
    )
    approve.add_argument("task", help="task id (or a unique prefix)")
    approve.add_argument("--reason", default="", help="a note kept with the decision")
    _checker(approve)
    _common(approve)
    approve.set_defaults(func=_approve)

    deny = actions.add_parser(
        "deny", aliases=["reject"], help="block a held output; the researcher sees the reason"
    )
    deny.add_argument("task", help="task id (or a unique prefix)")
    deny.add_argument("--reason", required=True, help="why, in words for the researcher")
    _checker(deny)
    _common(deny)
    deny.set_defaults(func=_deny)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the agent's TOML config file")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _checker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checker",
        help="your name as recorded with the decision (default: your login name)",
    )


def _open_state(args: argparse.Namespace) -> AgentState:
    from node_agent.config import load_config
    from node_agent.state import AgentState

    return AgentState(load_config(args.config).state_db)


def _resolve(state: AgentState, task: str) -> str:
    """Return the full task id of a held output from an id or a unique prefix."""
    ids = [r.task_id for r in state.reviews()]
    if task in ids:
        return task
    matches = [i for i in ids if i.startswith(task)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"no held output for task {task!r}; `fedtre agent inbox list` shows them")
    raise InvalidRequest(f"{task!r} matches {len(matches)} held outputs; give more of the id")


def _status(review: Review) -> str:
    if review.decision is None:
        return "pending"
    when = f"{review.decided_at:%Y-%m-%d %H:%M:%S} UTC" if review.decided_at else ""
    sent = "" if review.reported_at else " (not yet sent)"
    because = f": {review.reason}" if review.reason else ""
    return f"{review.decision} by {review.decided_by} at {when}{because}{sent}"


def _as_json(review: Review) -> dict[str, Any]:
    return {
        "task_id": review.task_id,
        "job_id": review.job_id,
        "project": review.project,
        "analysis": review.analysis,
        "dataset": review.dataset,
        "params": review.params,
        "held_at": review.held_at.isoformat(),
        "status": "pending" if review.decision is None else review.decision,
        "decided_by": review.decided_by,
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "reason": review.reason,
        "reported": review.reported_at is not None,
        "outcome_if_released": review.candidate.outcome.value,
        "output": review.candidate.payload,
        "rules": [
            {"rule": r.rule, "passed": r.passed, "detail": r.detail} for r in review.candidate.rules
        ],
    }


def _list(args: argparse.Namespace) -> int:
    with _open_state(args) as state:
        reviews = state.reviews(pending_only=not args.all)
        asked = inbox_requests.requests(state, pending_only=not args.all)
    if args.json:
        print_json([_as_json(r) for r in reviews] + [inbox_requests.as_json(q) for q in asked])
        return 0
    if asked:
        inbox_requests.print_requests(asked)
        print()
    if not reviews:
        print("no held outputs" if args.all else "no held outputs await a decision")
        return 0
    print_table(
        ["task", "job", "project", "analysis", "dataset", "held (UTC)", "status"],
        [
            [
                r.task_id,
                r.job_id,
                r.project,
                r.analysis,
                r.dataset,
                f"{r.held_at:%Y-%m-%d %H:%M:%S}",
                "pending" if r.decision is None else r.decision,
            ]
            for r in reviews
        ],
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    if inbox_requests.is_request(args.task):
        with _open_state(args) as state:
            request = inbox_requests.OperatorRequests(state).get(args.task)
        if args.json:
            print_json(inbox_requests.as_json(request))
        else:
            print("\n".join(inbox_requests.show_lines(request)))
        return 0
    with _open_state(args) as state:
        review = state.review(_resolve(state, args.task))
    if args.json:
        print_json(_as_json(review))
        return 0
    for line in show_lines(review):
        print(line)
    return 0


def show_lines(review: Review) -> list[str]:
    """The held output as the output checker reads it: the request, the rules, the output."""
    lines = [
        f"task {review.task_id} (job {review.job_id}, project {review.project})",
        f"  analysis  {review.analysis} on dataset {review.dataset!r}",
        f"  params    {json.dumps(review.params, sort_keys=True)}",
        f"  held      {review.held_at:%Y-%m-%d %H:%M:%S} UTC",
        f"  status    {_status(review)}",
        "",
        "rules:",
    ]
    for r in review.candidate.rules:
        lines.append(f"  [{'pass' if r.passed else 'FAIL'}] {r.rule}: {r.detail}")
    outcome = review.candidate.outcome.value
    lines += ["", f"output that would leave the TRE if approved (outcome {outcome}):"]
    frame = review_frame(review)
    if frame is not None:
        lines += ["  " + line for line in frame.to_string().splitlines()]
    lines.append("  " + json.dumps(review.candidate.payload, sort_keys=True))
    return lines


def review_frame(review: Review) -> Any:
    try:
        from fedtre.analyses import get_analysis

        return get_analysis(review.analysis).to_frame(review.params, review.candidate.payload)
    except Exception:  # the JSON below is the exact output either way
        return None


def _who(args: argparse.Namespace) -> str:
    if args.checker:
        return str(args.checker)
    try:
        return getpass.getuser()
    except Exception as exc:
        raise InvalidRequest("cannot tell who you are; pass --checker NAME") from exc


def _approve(args: argparse.Namespace) -> int:
    from node_agent.airlock import Airlock

    if inbox_requests.is_request(args.task):
        return _decide_request(args, approve=True)
    with _open_state(args) as state:
        task_id = _resolve(state, args.task)
        output = Airlock(state).approve(task_id, checker=_who(args), reason=args.reason)
    if args.json:
        print_json({"task_id": task_id, "decision": "approved", "outcome": output.outcome.value})
    else:
        print(f"task {task_id}: approved; the running agent sends it ({output.outcome.value})")
    return 0


def _deny(args: argparse.Namespace) -> int:
    from node_agent.airlock import Airlock

    if inbox_requests.is_request(args.task):
        return _decide_request(args, approve=False)
    with _open_state(args) as state:
        task_id = _resolve(state, args.task)
        output = Airlock(state).deny(task_id, checker=_who(args), reason=args.reason)
    if args.json:
        print_json({"task_id": task_id, "decision": "denied", "outcome": output.outcome.value})
    else:
        print(f"task {task_id}: denied; the researcher sees it blocked with your reason")
    return 0


def _decide_request(args: argparse.Namespace, *, approve: bool) -> int:
    """Approve or deny a project or job waiting for the TRE operator (ids "r-...")."""
    with _open_state(args) as state:
        request = inbox_requests.decide(
            state, args.task, approve=approve, who=_who(args), reason=args.reason
        )
    if args.json:
        print_json(inbox_requests.as_json(request))
    elif approve:
        print(f"request {request.request_id}: approved; the running agent runs its tasks")
    else:
        print(f"request {request.request_id}: denied; its tasks are refused with your reason")
    return 0
