"""Deciding a finished job's state and combining its nodes' outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coordinator.domain.model import JobSpec, JobState, Task
from fedtre.analyses import get_analysis
from fedtre.analyses.base import NodeOutput, Outcome

_INCLUDED = frozenset({Outcome.RELEASED, Outcome.SUPPRESSED})


def finish(spec: JobSpec, tasks: Sequence[Task]) -> tuple[JobState, dict[str, Any]]:
    """Return the final state and combined result of a job whose tasks are all done.

    completed: every node released everything; partial: some node withheld something
    or failed; failed: no node released anything to combine.
    """
    outputs: dict[str, NodeOutput] = {t.node: t.output for t in tasks if t.output is not None}
    if not any(o.outcome in _INCLUDED for o in outputs.values()):
        return JobState.FAILED, {}
    combined = get_analysis(spec.analysis).combine(spec.params, outputs)
    if all(o.outcome is Outcome.RELEASED for o in outputs.values()) and len(outputs) == len(tasks):
        return JobState.COMPLETED, combined
    return JobState.PARTIAL, combined


_VERBS = {
    Outcome.BLOCKED: "blocked its output",
    Outcome.HELD: "held its output",
    Outcome.REFUSED: "refused the task",
    Outcome.FAILED: "failed",
}


def describe_withheld(outputs: Mapping[str, NodeOutput]) -> str:
    """Say why each node did not release, once per distinct cause.

    e.g. "nodes 'tre-a' and 'tre-b' failed (the query timed out); node 'tre-c' blocked its
    output (threshold: 3 < 10)": nodes with the same outcome and reason share one clause,
    so a cause common to every node is stated once, and a node's error is left out when
    a failed rule already says why.
    """
    by_cause: dict[tuple[str, str], list[str]] = {}
    for node, output in sorted(outputs.items()):
        verb = _VERBS.get(output.outcome, output.outcome.value)
        reasons = [f"{r.rule}: {r.detail}" for r in output.rules if not r.passed]
        # A failed rule is the cause; the node's error then restates it (a checker's or
        # operator's denial repeats its reason in both), so it is said only without one.
        if output.error and not reasons:
            reasons.append(output.error)
        by_cause.setdefault((verb, "; ".join(reasons)), []).append(node)
    clauses = []
    for (verb, why), nodes in by_cause.items():
        quoted = [f"'{n}'" for n in nodes]
        who = f"node {quoted[0]}" if len(nodes) == 1 else f"nodes {_and(quoted)}"
        if len(nodes) > 1:
            verb = verb.replace(" its ", " their ")
        clauses.append(f"{who} {verb}" + (f" ({why})" if why else ""))
    return "; ".join(clauses)


def withheld_reason(tasks: Sequence[Task]) -> str:
    """Why a finished job is not complete: the nodes that released nothing, and why."""
    return describe_withheld(
        {
            t.node: t.output
            for t in tasks
            if t.output is not None and t.output.outcome not in _INCLUDED
        }
    )


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
