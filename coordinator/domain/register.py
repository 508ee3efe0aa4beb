"""The public Data Use Register: one entry per approved application, public fields only.

The fields follow the HDR UK Data Use Register's public fields. An entry is built from
a fixed list of the application's public fields, so nothing else can reach it: no
person's name, no token, no job, parameter or result. A withdrawn or expired project
stays on the register, marked as such.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator.domain.applications import Application, ApplicationState
from fedtre.spreadsheet import guarded

ACCESS_TYPE = "TRE"
NOT_STARTED = "approved, not started"

# The register's columns, in order (JSON keys and the CSV header alike).
FIELDS = (
    "project_id",
    "project_title",
    "organisation_name",
    "organisation_sector",
    "lay_summary",
    "public_benefit_statement",
    "legal_basis_article6",
    "legal_basis_article9",
    "duty_of_confidentiality",
    "national_data_opt_out",
    "datasets",
    "tres",
    "access_type",
    "project_start_date",
    "project_end_date",
    "latest_approval_date",
    "status",
    "outputs",
)


@dataclass(frozen=True)
class ProjectState:
    """What the register needs of the project an approval created: when it starts and
    lapses."""

    name: str
    approval_expires_at: datetime | None
    starts_at: datetime | None = None


def status(application: Application, project: ProjectState | None, now: datetime) -> str:
    """ "approved, not started" (before its start date), "active", "expired" (its approved
    end passed) or "withdrawn" (ended before it)."""
    if application.state is ApplicationState.WITHDRAWN or project is None:
        return "withdrawn"
    scope = application.approved_scope
    expires = project.approval_expires_at
    if expires is not None and now < expires:
        return (
            NOT_STARTED if project.starts_at is not None and now < project.starts_at else "active"
        )
    if scope is not None and expires is not None and expires < scope.expires_at():
        return "withdrawn"  # an admin ended it before its approved end date
    return "expired"


def entry(application: Application, project: ProjectState | None, now: datetime) -> dict[str, Any]:
    """The register's entry for an approved (or since withdrawn) application."""
    form = application.form
    scope = application.approved_scope
    assert scope is not None, "only approved applications are on the register"
    return {
        "project_id": form.project_name,
        "project_title": form.title,
        "organisation_name": form.organisation,
        "organisation_sector": application.sector,
        "lay_summary": form.lay_summary,
        "public_benefit_statement": form.public_benefit,
        "legal_basis_article6": f"UK GDPR Article {form.article6}",
        "legal_basis_article9": f"UK GDPR Article {form.article9}",
        "duty_of_confidentiality": form.duty_of_confidentiality,
        "national_data_opt_out": form.national_data_opt_out,
        "datasets": list(scope.datasets),
        "tres": list(scope.nodes),
        "access_type": ACCESS_TYPE,
        "project_start_date": form.start_date.isoformat(),
        "project_end_date": scope.end_date.isoformat(),
        "latest_approval_date": _day(application.approved_at),
        "status": status(application, project, now),
        "outputs": list(application.publications),
    }


def entries(
    applications: Iterable[Application], projects: dict[str, ProjectState], now: datetime
) -> list[dict[str, Any]]:
    """The register: every application ever approved, in order of approval."""
    listed = [
        a for a in applications
        if a.approved_scope is not None
        and a.state in (ApplicationState.APPROVED, ApplicationState.WITHDRAWN)
    ]  # fmt: skip
    listed.sort(key=lambda a: (a.approved_at or now, a.id))
    return [entry(a, projects.get(a.form.project_name), now) for a in listed]


def to_json(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"access_type": ACCESS_TYPE, "entries": rows}, indent=2).encode()


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    """CSV with the FIELDS header; lists are joined with "; "."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(FIELDS)
    for row in rows:
        writer.writerow(
            [guarded("; ".join(v) if isinstance(v, list) else str(v)) for v in row.values()]
        )
    return out.getvalue().encode()


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value else ""
