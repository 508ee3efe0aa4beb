"""Plain words and form fields for the portal's pages (no HTTP, no coordinator calls)."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Callable
from typing import Any

from fedtre.catalogue.entry import CatalogueEntry
from fedtre.client import NodeResult
from fedtre.errors import InvalidRequest
from fedtre.spreadsheet import guarded

# The Data Access Request form: (field, label, "text" | "long" | "list" | "date").
APPLICATION_FIELDS: list[tuple[str, str, str]] = [
    ("project_name", "Project name (the project approval creates)", "text"),
    ("title", "Title", "text"),
    ("organisation", "Organisation", "text"),
    ("applicants", "Other applicants (comma-separated user names; you are always one)", "list"),
    ("lay_summary", "Lay summary", "long"),
    ("public_benefit", "Public benefit", "long"),
    ("technical_summary", "Technical summary", "long"),
    ("funders", "Funders (comma-separated)", "list"),
    ("start_date", "Start date", "date"),
    ("end_date", "End date (the last day the project may use the data)", "date"),
    ("article6", "UK GDPR Article 6 lawful basis, e.g. 6(1)(e)", "text"),
    ("article9", "UK GDPR Article 9 condition, e.g. 9(2)(j)", "text"),
    ("duty_of_confidentiality", "Common law duty of confidentiality", "text"),
    ("national_data_opt_out", "National data opt-out", "text"),
    ("nodes", "TREs (comma-separated node ids)", "list"),
    ("datasets", "Datasets (comma-separated)", "list"),
    ("analyses", "Analyses (comma-separated)", "list"),
    ("linkage", "Linkage", "text"),
    ("expected_outputs", "Expected outputs", "long"),
]

_OUTCOME_WORDS = {
    "released": "released its output",
    "suppressed": "released its output with some cells withheld by the disclosure rules",
    "blocked": "released nothing: its disclosure rules blocked the output",
    "refused": "refused the task",
    "failed": "failed to run the analysis",
    "held": "is holding its output",
}


def node_outcome(task: NodeResult) -> str:
    """e.g. "released its output", or "released nothing: ... (too few records)"."""
    if task.output is None:
        return {"queued": "has not received the task yet", "delivered": "is running the task"}.get(
            task.state, f"is {task.state}"
        )
    text = _OUTCOME_WORDS.get(task.outcome, task.outcome)
    if task.outcome == "held":  # why: the output checker, or the operator's approval
        waiting = "; ".join(r.detail for r in task.rules if not r.passed)
        return f"{text}: {waiting}" if waiting else text
    return f"{text} ({task.error})" if task.error else text


def cell(value: Any, figures: int = 6) -> str:
    """A table value: "withheld" for a missing one (NA, NaN, None); floats to `figures`
    significant figures (0: exactly, as the output checker must see them)."""
    if _missing(value):
        return "withheld"
    if isinstance(value, float) and figures:
        return f"{value:.{figures}g}"
    return str(value)


def result_csv(frame: Any) -> str:
    """A result table as CSV, every label and text cell guarded against running as a
    spreadsheet formula (group labels come from the TREs' data)."""
    safe = frame.rename(index=guarded, columns=guarded).map(guarded)
    safe.index.names = [guarded(name) for name in frame.index.names]
    buffer = io.StringIO()
    safe.to_csv(buffer, quoting=csv.QUOTE_NONNUMERIC)
    return buffer.getvalue()


def row_label(label: Any) -> str:
    """A row's label: its parts joined; a missing part is the open end ("after")."""
    parts = label if isinstance(label, tuple) else (label,)
    return ", ".join("after" if _missing(p) else str(p) for p in parts)


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)
    except (TypeError, ValueError):  # pd.NA compares to NA
        return True


def matches(entry: CatalogueEntry, q: str) -> bool:
    """Whether a keyword appears in the dataset's name, node or description."""
    if not q:
        return True
    d = entry.dataset
    text = " ".join([d.name, entry.node, str(d.description or "")])
    return q in text.lower()


def has_column(entry: CatalogueEntry, column: str) -> bool:
    return not column or any(column in name.lower() for name in entry.dataset.columns)


def columns_of(entries: list[CatalogueEntry], dataset: str) -> list[tuple[str, str]]:
    """(column, type) of a dataset, as its first advertising node declares it."""
    for entry in entries:
        if entry.dataset.name == dataset:
            return sorted(entry.dataset.columns.items())
    return []


# The submit form's parameter rows, and the parameter names it suggests.
PARAM_ROWS = 4
PARAM_NAMES = (
    "column", "by", "rows", "columns", "time", "event", "outcome", "covariates", "family",
    "edges", "width", "origin", "probs",
)  # fmt: skip


def job_spec(form: Any, field: Callable[[Any, str], str]) -> dict[str, Any]:
    """The Client.submit arguments from the submit form, its parameters read by the CLI's
    own rules (KEY=VALUE rows as --param, the filter as --filter, JSON as --params)."""
    from fedtre.cli.jobs import build_params

    for name in ("analysis", "dataset"):
        if not field(form, name):
            raise InvalidRequest(f"choose the {name}")
    rows = [(field(form, f"key{i}"), field(form, f"value{i}")) for i in range(PARAM_ROWS)]
    for key, value in rows:
        if value and not key:
            raise InvalidRequest(f"the value {value!r} has no parameter name beside it")
    cli_args = argparse.Namespace(
        analysis=field(form, "analysis"),
        params=field(form, "params") or None,
        param=[f"{key}={value}" for key, value in rows if key],
        filter=field(form, "filter") or None,
    )
    return {
        "analysis": field(form, "analysis"),
        "dataset": field(form, "dataset"),
        "params": build_params(cli_args),
        "nodes": [n.strip() for n in field(form, "nodes").split(",") if n.strip()],
        "project": field(form, "project") or "default",
    }
