"""How jobs and results read in a notebook and a shell: short reprs and HTML.

A result shows its combined table, why the job did not complete (once, however many nodes
share the cause), each node's outcome in words, and what the nodes' disclosure rules did
to the figures (rounding or cell-key noise), never the certificates, matrices and
payloads behind them. fedtre.client's classes call these from __repr__ and _repr_html_.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from fedtre.disclosure.rules import OPERATOR_APPROVAL

if TYPE_CHECKING:
    from fedtre.client import JobStatus, NodeResult, Result

# The rules that say how released counts were protected (fedtre.disclosure.rules).
_COUNT_RULES = ("perturbation", "rounding")
_FINISHED_WITHOUT_RESULT = frozenset({"failed", "rejected", "cancelled"})


def node_outcome(job: JobStatus, part: NodeResult) -> str:
    """What happened at one node, in words: "released", "failed", "held for ...", ..."""
    outcome = part.outcome
    if outcome == "pending":
        return "did not answer" if job.finished else "working"
    if outcome == "held" and any(r.rule == OPERATOR_APPROVAL for r in part.rules):
        return "waiting for its TRE's operator to approve the project or job"
    if outcome == "released":
        if job.state == "failed":
            return "answered (not combined: the job failed)"
        return "released"
    return {
        "suppressed": "released, with some values withheld by its disclosure rules",
        "blocked": "withheld its output (disclosure rules)",
        "held": "held for its TRE's output checker",
        "refused": "refused the task",
        "failed": "failed",
    }.get(outcome, outcome)


def nodes_in_words(job: JobStatus) -> list[str]:
    """One "node: outcome" entry per node, in the job's node order."""
    return [f"{node}: {node_outcome(job, part)}" for node, part in job.tasks.items()]


def cause(job: JobStatus) -> str:
    """Why the job has no complete result, stated once ("" when it completed)."""
    if job.state == "rejected":
        return f"rejected by {job.decided_by}: {job.reason}"
    if job.state == "cancelled":
        return job.reason or "cancelled"
    if job.state not in ("failed", "partial"):
        return ""
    error = (job.combined or {}).get("error")
    text = job.reason or (str(error) if error else "")
    if not text and job.state == "failed":
        # an older coordinator states no reason: the nodes' own messages, each once
        errors = sorted({p.error for p in job.tasks.values() if p.error})
        text = "; ".join(errors) or "no node released a result"
    return text


def disclosure_note(job: JobStatus) -> str:
    """What the nodes' disclosure rules did to the released figures, in their own words."""
    words = sorted(
        {
            rule.detail
            for part in job.tasks.values()
            for rule in part.rules
            if rule.rule in _COUNT_RULES and rule.passed
        }
    )
    note = "Each node released its part only after its disclosure checks"
    if words:
        note += "; " + "; ".join(words)
        note += ". Totals and n are sums of the nodes' protected counts, not exact counts"
    return note + "."


def job_repr(job: JobStatus) -> str:
    """e.g. <Job 12 glm on 'cohort': running, round 3 of at most 25; tre-a: working>"""
    state = job.state.replace("_", " ")
    if job.progress is not None and not job.finished and job.progress.round:
        state += f", {job.progress.describe()}"
    nodes = "; ".join(nodes_in_words(job))
    return f"<Job {job.id} {job.analysis} on {job.dataset!r}: {state}; {nodes or 'no nodes yet'}>"


def result_repr(result: Result) -> str:
    """e.g. <Result of job 12 (glm): completed, 5 rows; tre-a: released, tre-b: released>"""
    job = result.job
    text = f"<Result of job {job.id} ({job.analysis}): {job.state.replace('_', ' ')}"
    why = cause(job)
    if why:
        text += f" - {why}"
    frame = result.to_frame()
    if frame is not None:
        text += f", {len(frame)} row{'s' if len(frame) != 1 else ''}"
    return text + f"; {'; '.join(nodes_in_words(job))}>"


def job_html(job: JobStatus) -> str:
    """The job's state, progress, cause and nodes, as an HTML fragment."""
    parts = [_heading(job)]
    if job.progress is not None and not job.finished and job.progress.round:
        parts.append(f"<p>{html.escape(job.progress.describe())}</p>")
    parts += _cause_and_nodes(job)
    return "<div>" + "".join(parts) + "</div>"


def result_html(result: Result) -> str:
    """The combined table, model figures and warnings, cause, nodes and disclosure note."""
    from fedtre.report import MAX_ROWS, figures_text  # report imports this module

    job = result.job
    parts = [_heading(job)]
    frame = result.to_frame()
    if frame is not None:
        parts.append(frame.to_html(max_rows=MAX_ROWS, na_rep="withheld"))
    elif result.combined and job.state not in _FINISHED_WITHOUT_RESULT:
        parts.append(f"<p>{html.escape(figures_text(result))}</p>")
    model = result.model
    if model is not None:
        parts += [f"<p>{html.escape(line)}</p>" for line in model.lines()]
    warning = result.combined.get("warning")
    if warning:
        parts.append(f"<p><b>warning:</b> {html.escape(str(warning))}</p>")
    parts += _cause_and_nodes(job)
    if job.finished and job.state not in _FINISHED_WITHOUT_RESULT:
        parts.append(f"<p><small>{html.escape(disclosure_note(job))}</small></p>")
    return "<div>" + "".join(parts) + "</div>"


def client_html(target: str) -> str:
    return (
        f"<div><b>fedtre client</b> for the coordinator at <code>{html.escape(target)}</code>: "
        "<code>client.submit(analysis, dataset=..., params=...)</code>, "
        "<code>client.nodes()</code>, <code>client.jobs()</code></div>"
    )


def _heading(job: JobStatus) -> str:
    return (
        f"<p><b>Job {job.id}</b> &middot; {html.escape(job.analysis)} on "
        f"<code>{html.escape(job.dataset)}</code> (project {html.escape(job.project)}) "
        f"&middot; <b>{html.escape(job.state.replace('_', ' '))}</b></p>"
    )


def _cause_and_nodes(job: JobStatus) -> list[str]:
    parts = []
    why = cause(job)
    if why:
        parts.append(f"<p><b>why:</b> {html.escape(why)}</p>")
    if job.tasks:
        items = "".join(
            f"<li><b>{html.escape(node)}</b>: {html.escape(node_outcome(job, part))}</li>"
            for node, part in job.tasks.items()
        )
        parts.append(f"<ul>{items}</ul>")
    return parts
