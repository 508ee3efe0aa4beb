"""The `fedtre` command behind each API call, so that a refusal names what a person typed."""

from __future__ import annotations

COMMAND_BY_RPC: dict[str, str] = {
    "SubmitJob": "fedtre submit",
    "GetJob": "fedtre result / fedtre jobs show",
    "ListJobs": "fedtre jobs list",
    "ApproveJob": "fedtre jobs approve",
    "RejectJob": "fedtre jobs reject",
    "CancelJob": "fedtre jobs cancel",
    "ListNodes": "fedtre nodes",
    "GetNetworkStatus": "fedtre status",
    "WhoAmI": "fedtre whoami",
    "CreateUser": "fedtre users add",
    "ListUsers": "fedtre users list",
    "SetUserDisabled": "fedtre users disable / enable",
    "IssueToken": "fedtre tokens issue",
    "ListTokens": "fedtre tokens list",
    "RevokeToken": "fedtre tokens revoke",
    "CreateProject": "fedtre projects create",
    "UpdateProject": "fedtre projects update",
    "AddProjectMember": "fedtre projects add-member",
    "RemoveProjectMember": "fedtre projects remove-member",
    "GetProject": "fedtre projects show",
    "ListProjects": "fedtre projects list",
    "VerifyAudit": "fedtre audit verify",
    "ExportAudit": "fedtre audit export",
}


def command_for(method: str) -> str:
    """`fedtre jobs approve` for "/fedtre.v1.JobService/ApproveJob"; the RPC's own name for
    one without a command (an agent's call)."""
    name = method.rsplit("/", 1)[-1]
    command = COMMAND_BY_RPC.get(name)
    return f"`{command}`" if command else name
