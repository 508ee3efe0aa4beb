"""The TRE's say over whole projects and jobs: which it serves, and which its operator approves.

    [governance]
    projects = ["diabetes-2026"]   # the projects this TRE serves; omit to serve every
                                   # project the network approves
    operator_approval = "project"  # "none" (default), "project": the TRE's operator
                                   # approves each new project once; "job": each job

A task of a project the TRE does not serve is refused (node_agent.policy). A task that
needs the operator's approval waits in the agent's state database: the agent reports it
HELD (the job waits, showing this TRE as held), and the operator decides in the inbox
(`fedtre agent inbox list|show|approve|deny`, node_agent.approvals), seeing the project,
the analysis, its parameters and the outputs it would release. Approved, the task runs
as any other; denied, it is reported refused with the operator's reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedtre.errors import InvalidRequest

APPROVAL_MODES = ("none", "project", "job")
_KEYS = ("projects", "operator_approval")


@dataclass(frozen=True)
class GovernanceConfig:
    """projects: the projects served (None: every project); operator_approval: a mode."""

    projects: tuple[str, ...] | None = None
    operator_approval: str = "none"

    def serves(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    def to_toml_lines(self) -> list[str]:
        lines = []
        if self.projects is not None:
            lines.append("projects = [" + ", ".join(_quoted(p) for p in self.projects) + "]")
        lines.append(f"operator_approval = {_quoted(self.operator_approval)}")
        return lines


def parse_governance(raw: Mapping[str, Any]) -> GovernanceConfig:
    """Return the [governance] section checked; raise InvalidRequest saying what to fix."""
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known keys here: {', '.join(_KEYS)}")
    projects = raw.get("projects")
    if projects is not None:
        if not isinstance(projects, list) or not all(isinstance(p, str) and p for p in projects):
            raise InvalidRequest(
                'projects must be a list of project names, e.g. ["diabetes-2026"] '
                "(an empty list serves none)"
            )
        projects = tuple(dict.fromkeys(projects))
    mode = raw.get("operator_approval", "none")
    if mode not in APPROVAL_MODES:
        raise InvalidRequest(
            f"operator_approval must be one of {', '.join(APPROVAL_MODES)}, not {mode!r}"
        )
    return GovernanceConfig(projects=projects, operator_approval=mode)


def _quoted(value: str) -> str:
    import json

    return json.dumps(value)
