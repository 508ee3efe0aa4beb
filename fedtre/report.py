"""Plain-text rendering of a job's result, shared by `fedtre result` and `fedtre demo`."""

from __future__ import annotations

from typing import Any

from fedtre.client import Result
from fedtre.notebook import node_outcome

# Longer tables (survival tables of exact times) are shown head and tail.
MAX_ROWS = 60
# Bookkeeping keys of a combined payload, shown separately from the figures.
_META_KEYS = frozenset({"nodes", "withheld", "withheld_by", "rows", "columns", "column", "by"})


def result_lines(result: Result, *, with_cause: bool = True) -> list[str]:
    """The combined answer, why the job did not complete (once; with_cause), then one line
    per node: its outcome in words, and failed rules or an error the cause does not say."""
    lines = []
    frame = result.to_frame()
    if frame is not None:
        lines += frame.to_string(max_rows=MAX_ROWS).splitlines()
        lines += _extra_lines(result)
    else:
        lines.append(f"combined: {figures_text(result)}")
    withheld = result.combined.get("withheld_by") or result.combined.get("withheld")
    if withheld:
        lines.append("withheld: a value missing above was withheld by a node's disclosure rules")
    why = result.cause
    if why and with_cause:
        lines.append(f"why: {why}")  # once, however many nodes share the cause
    for node, part in result.nodes.items():
        line = f"  {node}: {node_outcome(result.job, part)}"
        if "n" in part.payload and frame is None:
            line += f" (n = {_figure(part.payload['n'])})"
        details = [f"{r.rule}: {r.detail}" for r in part.rules if not r.passed]
        details += [part.error] if part.error else []
        details = [d for d in details if d not in why]
        if details:
            line += " - " + "; ".join(details)
        lines.append(line)
    return lines


def figures_text(result: Result) -> str:
    """A non-tabular combined result's figures, "k = v, ..." ("nothing" when none)."""
    # a failed job's error is its cause, stated once with the nodes
    hidden = _META_KEYS | {"error", "round"}
    figures = {k: v for k, v in result.combined.items() if k not in hidden}
    return ", ".join(f"{k} = {_figure(v)}" for k, v in figures.items()) or "nothing"


def _extra_lines(result: Result) -> list[str]:
    """Model figures, survival medians and the log-rank test, warnings."""
    lines: list[str] = []
    model = result.model
    if model is not None:
        lines += model.lines()
    combined = result.combined
    groups = combined.get("groups")
    if result.job.analysis == "kaplan_meier" and isinstance(groups, list):
        for label, curve in groups:
            name = "all" if combined.get("by") is None else f"{combined['by']} = {label}"
            if isinstance(curve, dict):
                lines.append(
                    f"{name}: n = {_figure(curve.get('n'))}, events = "
                    f"{_figure(curve.get('events'))}, median survival = "
                    f"{'not reached' if curve.get('median') is None else _figure(curve['median'])}"
                )
            else:
                lines.append(f"{name}: withheld")
        logrank = combined.get("logrank")
        if isinstance(logrank, dict):
            lines.append(
                f"log-rank test: chi2 = {_figure(logrank.get('chi2'))} on "
                f"{_figure(logrank.get('df'))} df, p = {_figure(logrank.get('p_value'))}"
            )
    if combined.get("warning"):
        lines.append(f"warning: {combined['warning']}")
    return lines


def _figure(value: Any) -> str:
    """A figure as people read it: whole numbers bare, others to 4 significant digits
    (chi2 = 26.08, p = 3.2e-07), large ones to one decimal."""
    if value is None:
        return "withheld"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)
