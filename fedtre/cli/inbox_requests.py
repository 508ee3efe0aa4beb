"""The TRE operator's approval requests in `fedtre agent inbox` (node_agent.approvals).

Requests have ids "r-..." (task ids never start with "r"); list shows them above the held
outputs, and show/approve/deny take them like a held output's task id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fedtre.cli.common import print_table

if TYPE_CHECKING:
    from node_agent.approvals import Request
    from node_agent.state import AgentState

PREFIX = "r-"


def is_request(ident: str) -> bool:
    return ident.startswith(PREFIX)


def requests(state: AgentState, *, pending_only: bool) -> list[Request]:
    from node_agent.approvals import OperatorApprovals

    return OperatorApprovals(state).requests(pending_only=pending_only)


def resolve(state: AgentState, ident: str) -> str:
    """The full id of a request from an id or a unique prefix."""
    from fedtre.errors import InvalidRequest, NotFound

    ids = [r.request_id for r in requests(state, pending_only=False)]
    matches = [i for i in ids if i.startswith(ident)]
    if ident in ids:
        return ident
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"no approval request {ident!r}; `fedtre agent inbox list` shows them")
    raise InvalidRequest(f"{ident!r} matches {len(matches)} requests; give more of the id")


def as_json(request: Request) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "kind": request.kind,
        "project": request.project,
        "job_id": request.job_id,
        "analysis": request.analysis,
        "dataset": request.dataset,
        "params": request.params,
        "outputs": request.outputs,
        "approved_by": request.approved_by,
        "requested_at": request.requested_at.isoformat(),
        "status": "pending" if request.decision is None else request.decision,
        "decided_by": request.decided_by,
        "reason": request.reason,
        "waiting_tasks": request.waiting,
        "application": request.application,
    }


def print_requests(found: list[Request]) -> None:
    print("approval requests (this TRE's operator approves before the tasks run):")
    print_table(
        ["request", "kind", "project", "job", "analysis", "dataset", "requested (UTC)", "status"],
        [
            [
                r.request_id,
                r.kind,
                r.project,
                r.job_id,
                r.analysis,
                r.dataset,
                f"{r.requested_at:%Y-%m-%d %H:%M:%S}",
                "pending" if r.decision is None else r.decision,
            ]
            for r in found
        ],
    )


def show_lines(request: Request) -> list[str]:
    """The request as the operator reads it: what would run, and what could leave."""
    what = f"project {request.project!r}" if request.kind == "project" else f"job {request.job_id}"
    status = "pending"
    if request.decision is not None:
        when = f" at {request.decided_at:%Y-%m-%d %H:%M:%S} UTC" if request.decided_at else ""
        because = f": {request.reason}" if request.reason else ""
        status = f"{request.decision} by {request.decided_by}{when}{because}"
    return [
        f"request {request.request_id}: approve {what} before its tasks run here",
        f"  project   {request.project} (approved on the network by "
        f"{', '.join(request.approved_by) or '-'})",
        f"  job       {request.job_id}: {request.analysis} on dataset {request.dataset!r}",
        f"  params    {json.dumps(request.params, sort_keys=True)}",
        f"  outputs   {request.outputs}",
        f"  waiting   {request.waiting} task(s)",
        f"  requested {request.requested_at:%Y-%m-%d %H:%M:%S} UTC",
        f"  status    {status}",
        *(application_lines(request) if request.kind == "project" else []),
    ]


def application_lines(request: Request) -> list[str]:
    """The Data Access Request the network's committee approved for the project."""
    if not request.application_fetched:
        return ["application: not fetched from the coordinator yet (the agent asks again)"]
    a = request.application
    if a is None:
        return ["application: none on record (an admin created the project directly)"]
    form, scope = a.get("form", {}), a.get("approved_scope", {})
    people = ", ".join(
        f"{p.get('name', '')}{' (accredited)' if p.get('accredited') else ''}"
        for p in a.get("applicants", [])
    )
    return [
        f"application {a.get('id', '')} (approved {a.get('approved_at', '')[:10]}):",
        f"  title       {form.get('title', '')}",
        f"  people      {people} of {form.get('organisation', '')} ({a.get('sector', '')})",
        f"  lay summary {form.get('lay_summary', '')}",
        f"  benefit     {form.get('public_benefit', '')}",
        f"  technical   {form.get('technical_summary', '')}",
        f"  legal basis UK GDPR Art. {form.get('article6', '')} and {form.get('article9', '')}; "
        f"confidentiality: {form.get('duty_of_confidentiality', '')}; "
        f"opt-out: {form.get('national_data_opt_out', '')}",
        f"  linkage     {form.get('linkage', '') or '-'}",
        f"  outputs     {form.get('expected_outputs', '')}",
        f"  approved    nodes {', '.join(scope.get('nodes', []))}; datasets "
        f"{', '.join(scope.get('datasets', []))}; analyses {', '.join(scope.get('analyses', []))}; "
        f"until {scope.get('end_date', '')}",
    ]


class OperatorRequests:
    """Look-up of one request by id or unique prefix."""

    def __init__(self, state: AgentState) -> None:
        self._state = state

    def get(self, ident: str) -> Request:
        from node_agent.approvals import OperatorApprovals

        return OperatorApprovals(self._state).request(resolve(self._state, ident))


def decide(state: AgentState, ident: str, *, approve: bool, who: str, reason: str) -> Request:
    from node_agent.approvals import OperatorApprovals

    return OperatorApprovals(state).decide(
        resolve(state, ident), approve=approve, operator=who, reason=reason
    )
