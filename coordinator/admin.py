"""Admin use cases: people, their API tokens, projects, and the audit log.

Independent of gRPC (coordinator.rpc.admin_servicer is the transport). The caller's
role has been checked by then; what is left here are the rules on the values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from coordinator.auth import hash_token, new_token
from coordinator.domain.governance import (
    AUTO_APPROVER,
    PEOPLE,
    Project,
    ProjectChanges,
    Role,
    Token,
    User,
    can_read_project,
    network_problems,
)
from coordinator.store.checkpoints import CheckpointStore
from coordinator.store.store import Store
from fedtre.analyses import CATALOGUE
from fedtre.audit import AuditEntry, VerifyReport
from fedtre.errors import Conflict, InvalidRequest, NotFound
from fedtre.identity.peer import NAME_PATTERN, NAME_RULE, Identity
from fedtre.suggest import did_you_mean

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_TOKEN_DAYS = 3650
# Node ids, dataset and analysis names as a project lists them.
_LISTED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Admin:
    """Governance operations over the store's governance tables (each audited there)."""

    def __init__(self, store: Store, clock: Clock = _utc_now) -> None:
        self.governance = store.governance
        self._store = store
        self.checkpoints = CheckpointStore(store)
        self.clock = clock
        # Checks of a project change (by, current, proposed) that raise to refuse it: the
        # data access committee's (coordinator.applications) keeps an approved scope.
        self.project_guards: list[Callable[[Identity, Project, Project], None]] = []

    # -- people ------------------------------------------------------------------------

    def bootstrap_admin(self, name: str, *, valid_days: int = 0) -> tuple[User, Token, str]:
        """Create the first admin and a token for them; return (user, token record, token).

        Only while the network has no admin: afterwards admins create people through
        the API. Raises Conflict when an admin exists.
        """
        if self.governance.has_admin():
            raise Conflict(
                "this coordinator already has an admin; admins add people with "
                "`fedtre users add` and `fedtre tokens issue`"
            )
        user = self.create_user(Identity("bootstrap", Role.ADMIN.value), name, Role.ADMIN.value)
        record, token = self.issue_token(
            Identity("bootstrap", Role.ADMIN.value), name, valid_days, "bootstrap"
        )
        return user, record, token

    def create_user(self, by: Identity, name: str, role: str) -> User:
        _check_name(name, "user name")
        if name == AUTO_APPROVER or name in ("coordinator", "anonymous", "bootstrap"):
            raise InvalidRequest(f"{name!r} is reserved; choose another name")
        if role not in PEOPLE:
            raise InvalidRequest(f"role must be one of {', '.join(PEOPLE)}, not {role!r}")
        user = self.governance.create_user(name, role, by.name, self.clock())
        logger.info("user created", extra={"user": name, "role": role, "by": by.name})
        return user

    def users(self) -> list[User]:
        return self.governance.users()

    def set_disabled(self, by: Identity, name: str, disabled: bool) -> User:
        if disabled and name == by.name:
            raise InvalidRequest("you cannot disable yourself; ask another admin")
        return self.governance.set_disabled(name, disabled, by.name, self.clock())

    def issue_token(
        self, by: Identity, user: str, valid_days: int = 0, description: str = ""
    ) -> tuple[Token, str]:
        """Issue user a new API token; return (its record, the token, shown only now)."""
        if not 0 <= valid_days <= MAX_TOKEN_DAYS:
            raise InvalidRequest(
                f"valid_days must be 0 (never expires) to {MAX_TOKEN_DAYS}, not {valid_days}"
            )
        now = self.clock()
        token_id, token = new_token()
        record = self.governance.add_token(
            token_id,
            user,
            hash_token(token),
            description=description.strip()[:200],
            expires_at=now + timedelta(days=valid_days) if valid_days else None,
            by=by.name,
            now=now,
        )
        logger.info("token issued", extra={"user": user, "token_id": token_id, "by": by.name})
        return record, token

    def tokens(self, user: str | None = None) -> list[Token]:
        return self.governance.tokens(user)

    def revoke_token(self, by: Identity, token_id: str) -> Token:
        record = self.governance.revoke_token(token_id, by.name, self.clock())
        logger.info("token revoked", extra={"token_id": token_id, "by": by.name})
        return record

    def whoami(self, identity: Identity) -> tuple[Identity, list[str]]:
        return identity, self.governance.member_of(identity.name)

    # -- projects ----------------------------------------------------------------------

    def create_project(self, by: Identity, project: Project) -> Project:
        """Create a project; raise InvalidRequest for a bad value, Conflict if it exists."""
        _check_name(project.name, "project name")
        checked = _checked(
            replace(project, approvals_required=project.approvals_required or 1), self.clock()
        )
        self._check_network(checked)
        return self.governance.create_project(checked, by.name, self.clock())

    def checked_project(self, project: Project) -> Project:
        """project with its values checked as create_project checks them (names trimmed).

        Raises InvalidRequest for a bad value.
        """
        _check_name(project.name, "project name")
        return _checked(project, self.clock())

    def update_project(self, by: Identity, name: str, changes: ProjectChanges) -> Project:
        current = self.governance.project(name)
        if current is None:
            raise NotFound(f"no project {name!r}; `fedtre projects list` shows them")
        checked = _checked(
            replace(
                current,
                **{k: v for k, v in changes.__dict__.items() if v is not None},
            ),
            self.clock(),
            lapsed_ok=True,
        )
        for guard in self.project_guards:
            guard(by, current, checked)
        changed = [f for f in ("nodes", "datasets", "analyses") if getattr(changes, f) is not None]
        self._check_network(checked, changed)
        # Store the checked values (names trimmed, duplicates dropped), not the raw ones.
        normalized = replace(
            changes,
            nodes=checked.nodes if changes.nodes is not None else None,
            datasets=checked.datasets if changes.datasets is not None else None,
            analyses=checked.analyses if changes.analyses is not None else None,
            auto_approve=checked.auto_approve if changes.auto_approve is not None else None,
        )
        return self.governance.update_project(name, normalized, by.name, self.clock())

    def _check_network(
        self, project: Project, fields: Sequence[str] = ("nodes", "datasets", "analyses")
    ) -> None:
        """Raise InvalidRequest naming every node, dataset or analysis (of fields) that
        the network does not have."""
        problems = network_problems(project, self._store.nodes(), fields)
        if problems:
            raise InvalidRequest(
                f"project {project.name!r} names what the network does not have:\n"
                + "\n".join(f"- {p}" for p in problems)
            )

    def add_member(self, by: Identity, project: str, user: str) -> Project:
        self.governance.user(user)  # NotFound for an unknown person
        return self.governance.add_member(project, user, by.name, self.clock())

    def remove_member(self, by: Identity, project: str, user: str) -> Project:
        return self.governance.remove_member(project, user, by.name, self.clock())

    def project(self, viewer: Identity, name: str) -> Project:
        """The project, if viewer may read it; NotFound alike if missing or not readable."""
        found = self.governance.project(name)
        if found is None or not can_read_project(viewer, found):
            raise NotFound(f"no project {name!r} that you can see; `fedtre projects list`")
        return found

    def projects(self, viewer: Identity) -> list[Project]:
        return [p for p in self.governance.projects() if can_read_project(viewer, p)]

    # -- audit -------------------------------------------------------------------------

    def verify_audit(self, checkpoint: tuple[int, str] | None = None) -> VerifyReport:
        """Walk the audit chain; with checkpoint (size, head), check that prefix is intact."""
        if checkpoint is None:
            return self.governance.verify_audit()
        if checkpoint[0] < 0 or len(checkpoint[1]) != 64:
            raise InvalidRequest("a checkpoint has a size of 0 or more and a 64-digit head hash")
        return self.checkpoints.check(*checkpoint)

    def audit_entries(self, since: int = 0) -> Iterator[AuditEntry]:
        return self.governance.audit_entries(since)


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(f"{what} {name!r} is not allowed: use {NAME_RULE} characters")


def _names(values: Iterable[str], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    for name in names:
        if not _LISTED_NAME.fullmatch(name):
            raise InvalidRequest(f"{what} {name!r} is not a valid name")
    return names


def _checked(project: Project, now: datetime, *, lapsed_ok: bool = False) -> Project:
    nodes = _names(project.nodes, "node")
    datasets = _names(project.datasets, "dataset")
    analyses = _names(project.analyses, "analysis")
    auto = _names(project.auto_approve, "analysis")
    if not nodes or not datasets or not analyses:
        raise InvalidRequest(
            "a project lists the nodes, datasets and analyses its jobs may use, e.g. "
            "--nodes tre-a,tre-b --datasets cohort --analyses count,crosstab"
        )
    unknown = sorted(set(analyses) - set(CATALOGUE))
    if unknown:
        hints = "".join(did_you_mean(a, CATALOGUE) for a in unknown)
        raise InvalidRequest(
            f"unknown analysis {unknown}{hints}; the catalogue has {', '.join(CATALOGUE)}"
        )
    outside = sorted(set(auto) - set(analyses))
    if outside:
        raise InvalidRequest(f"auto-approved analyses {outside} are not among the project's")
    if project.approvals_required < 1 or project.approvals_required > 10:
        raise InvalidRequest("approvals_required must be between 1 and 10")
    if project.approval_expires_at is None:
        raise InvalidRequest(
            "give the date the project's data-access approval lapses, e.g. --expires 2027-03-31"
        )
    if not lapsed_ok and project.approval_expires_at <= now:
        raise InvalidRequest("the approval expiry date must be in the future")
    if project.starts_at is not None and project.starts_at >= project.approval_expires_at:
        raise InvalidRequest(
            f"the approval starts ({project.starts_at:%Y-%m-%d}) on or after it lapses "
            f"({project.approval_expires_at:%Y-%m-%d}); give --starts before --expires"
        )
    return replace(project, nodes=nodes, datasets=datasets, analyses=analyses, auto_approve=auto)
