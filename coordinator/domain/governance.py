"""Safe people and safe projects: who may do what, and what a project's jobs may touch.

Plain rules over dataclasses; the store keeps them, the service applies them.

Roles (people authenticate with API tokens; nodes with certificates):

| role       | may                                                                      |
| ---------- | ------------------------------------------------------------------------ |
| researcher | submit jobs to, and read the jobs and results of, projects they belong to |
| approver   | also approve or reject any project's jobs (never their own), read all jobs |
| admin      | everything: people, tokens, projects, network status, the audit log       |
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.domain.model import Job, Node, Problem
from fedtre.identity.peer import Identity
from fedtre.suggest import did_you_mean

AUTO_APPROVER = "auto-approval"


class Role(enum.StrEnum):
    RESEARCHER = "researcher"
    APPROVER = "approver"
    ADMIN = "admin"


PEOPLE = tuple(r.value for r in Role)
APPROVERS = (Role.APPROVER.value, Role.ADMIN.value)
ADMINS = (Role.ADMIN.value,)
# Roles that read every project's jobs.
OVERSEERS = frozenset(APPROVERS)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class Token:
    """An API token's public record; the secret itself is never stored, only its hash."""

    token_id: str
    user: str
    description: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Project:
    """A project: its members, what its jobs may use, until when, and how they are approved."""

    name: str
    description: str
    members: tuple[str, ...]
    nodes: tuple[str, ...]
    datasets: tuple[str, ...]
    analyses: tuple[str, ...]
    approval_expires_at: datetime | None
    approvals_required: int
    auto_approve: tuple[str, ...]
    created_at: datetime
    created_by: str
    # When its data-access approval starts (an approved application's start date); None:
    # from its creation, as for a project an admin creates without one.
    starts_at: datetime | None = None

    def lapsed(self, now: datetime) -> bool:
        """Whether the project's data-access approval has lapsed (or was never given)."""
        return self.approval_expires_at is None or now >= self.approval_expires_at

    def not_started(self, now: datetime) -> bool:
        """Whether the project's data-access approval has yet to start."""
        return self.starts_at is not None and now < self.starts_at

    def approves_automatically(self, analysis: str) -> bool:
        return analysis in self.auto_approve


@dataclass(frozen=True)
class ProjectChanges:
    """The fields an admin changes on a project; None leaves a field as it is."""

    description: str | None = None
    nodes: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    analyses: tuple[str, ...] | None = None
    approval_expires_at: datetime | None = None
    approvals_required: int | None = None
    auto_approve: tuple[str, ...] | None = None
    starts_at: datetime | None = None


def network_problems(
    project: Project,
    known: Mapping[str, Node],
    fields: Collection[str] = ("nodes", "datasets", "analyses"),
) -> list[str]:
    """What project names in fields that the network does not have (empty: nothing).

    A node exists once its agent has registered (connected); a dataset or an analysis
    exists when one of the project's registered nodes advertises it.
    """
    problems: list[str] = []
    if "nodes" in fields:
        registered = sorted(known)
        unknown = [node for node in project.nodes if node not in known]
        if unknown and not registered:
            problems.append(
                f"unknown nodes {', '.join(map(repr, unknown))}: no agent has registered with "
                "this coordinator yet; start the TREs' agents (`fedtre agent run`), then "
                "create the project"
            )
        elif unknown:
            problems += [
                f"unknown node {node!r}{did_you_mean(node, registered)}; registered "
                f"nodes: {', '.join(registered)}"
                for node in unknown
            ]
    mine = [known[n] for n in project.nodes if n in known]
    if not mine:
        return problems
    names = ", ".join(n.node_id for n in mine)
    if "datasets" in fields:
        offered = sorted({d.name for n in mine for d in n.datasets})
        for dataset in project.datasets:
            if dataset not in offered:
                problems.append(
                    f"no node of the project ({names}) offers dataset {dataset!r}"
                    f"{did_you_mean(dataset, offered)}; they offer: {', '.join(offered) or '(none)'}"
                )
    if "analyses" in fields and all(n.analyses for n in mine):
        served = sorted({a for n in mine for a in n.analyses})
        for analysis in project.analyses:
            if analysis not in served:
                problems.append(
                    f"no node of the project ({names}) serves analysis {analysis!r}; "
                    f"they serve: {', '.join(served)}"
                )
    return problems


def is_member(identity: Identity, project: Project) -> bool:
    return identity.name in project.members


def can_read_project(identity: Identity, project: Project) -> bool:
    """Members read their project; approvers and admins read every project."""
    return identity.role in OVERSEERS or is_member(identity, project)


def visible_projects(identity: Identity, member_of: Iterable[str]) -> tuple[str, ...] | None:
    """The projects whose jobs identity may see: None means every project."""
    if identity.role in OVERSEERS:
        return None
    return tuple(member_of)


def can_see_job(identity: Identity, job: Job, member_of: Iterable[str]) -> bool:
    projects = visible_projects(identity, member_of)
    return projects is None or job.spec.project in projects


def scope_problems(
    project: Project | None,
    identity: Identity,
    project_name: str,
    analysis: str,
    dataset: str,
    targets: Sequence[str],
    now: datetime,
    member_of: Sequence[str] = (),
    withdrawn: bool = False,
) -> list[Problem]:
    """Every way a submission steps outside its project; empty when it may be submitted.

    withdrawn: the project's approving application was withdrawn (its approval ended then).

    To someone who may not read the project, a missing project and one they do not
    belong to look alike, and nothing of its scope is shown; member_of, the caller's own
    projects, is what they are offered instead.
    """
    if project is None or not is_member(identity, project):
        return [outsider_problem(identity, project_name, member_of)]
    problems: list[Problem] = []
    if project.lapsed(now):
        problems.append(
            Problem(approval_ended(project.name, project.approval_expires_at, withdrawn))
        )
    if analysis and analysis not in project.analyses:
        problems.append(
            Problem(
                f"project {project.name!r} does not allow analysis {analysis!r}; "
                f"it allows {list(project.analyses)}"
            )
        )
    if dataset and dataset not in project.datasets:
        problems.append(
            Problem(
                f"project {project.name!r} does not allow dataset {dataset!r}; "
                f"it allows {list(project.datasets)}"
            )
        )
    for node in targets:
        if node not in project.nodes:
            problems.append(
                Problem(
                    f"project {project.name!r} may not use node {node!r}; "
                    f"it may use {list(project.nodes)}",
                    node,
                )
            )
    return problems


def approval_ended(name: str, ended: datetime | None, withdrawn: bool = False) -> str:
    """Why project name's data-access approval no longer runs: it lapsed (or was
    withdrawn) at ended, or it has no expiry date at all."""
    if ended is None:
        return f"project {name!r}: its data-access approval has no expiry date set"
    how = "was withdrawn on" if withdrawn else "lapsed on"
    return f"project {name!r}: its data-access approval {how} {ended:%Y-%m-%d %H:%M} UTC"


def not_started_problem(project: Project, now: datetime) -> str:
    """Why project's jobs may not run yet (its approval starts later); empty when they may."""
    if not project.not_started(now):
        return ""
    return (
        f"project {project.name!r}: its data-access approval starts on "
        f"{project.starts_at:%Y-%m-%d %H:%M} UTC; submit its jobs from then"
    )


def outsider_problem(
    identity: Identity, project_name: str, member_of: Sequence[str] = ()
) -> Problem:
    """The one problem shown to a submitter who is not a member of project_name: with
    their own projects (member_of) and the nearest of them, nothing of any other."""
    yours = (
        f"your projects: {', '.join(member_of)}{did_you_mean(project_name, member_of)}"
        if member_of
        else "you are not a member of any project yet"
    )
    return Problem(
        f"you ({identity.name}) are not a member of a project {project_name!r}; {yours}. "
        f"An admin adds you with `fedtre projects add-member {project_name} {identity.name}`"
    )


def approval_problem(
    identity: Identity, job: Job, project: Project | None, already: Sequence[str], now: datetime
) -> str:
    """Why identity may not approve job now; empty when the approval counts."""
    if identity.name == job.submitted_by:
        return (
            f"{identity.name} submitted job {job.id}; nobody approves their own job: "
            "another approver must"
        )
    if identity.name in already:
        return f"{identity.name} has already approved job {job.id}; another approver must"
    if project is None:
        return f"job {job.id}'s project {job.spec.project!r} no longer exists"
    if project.lapsed(now):
        return f"{approval_ended(project.name, project.approval_expires_at)}; extend it first"
    return not_started_problem(project, now)
