"""Deciding a finished job's state and combining its nodes' outputs."""

from __future__ import annotations

from collections.abc import Sequence
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
