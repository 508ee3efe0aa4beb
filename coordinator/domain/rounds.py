"""Jobs of several rounds (iterative analyses such as glm): what follows a combined round.

When every task of a job's current round is done, next_step() decides, from the nodes'
outputs and the stored round state, either the next round (new tasks for the same nodes,
with the parameters the analysis computed from the combined aggregates) or the job's end.
The service stores either in one transaction (coordinator.store.rounds).

The round state stored with the job (jobs.round_state) is JSON:

    {"state": analysis state, "params": the current round's parameters for the nodes,
     "progress": figures for the researcher (e.g. {"iteration": 3, "deviance": 812.4}),
     "max_rounds": N, "nodes": [nodes taking part], "excluded": {node: outcome}}

Nodes that do not release a round:
- REFUSED or FAILED in round 1: left out, like nodes of a single-round job; the fit goes on
  over the others and the job ends partial, listing them under nodes.excluded;
- BLOCKED (a disclosure rule) in any round, or REFUSED or FAILED after round 1: the job
  ends at once (partial when a rule blocked, failed otherwise), with the reason in
  combined["error"]: a model is never fitted on fewer nodes than it started with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from coordinator.domain.completion import describe_withheld
from coordinator.domain.model import Job, JobState
from fedtre.analyses import get_analysis
from fedtre.analyses.base import NodeOutput, Outcome
from fedtre.analyses.iterative import IterativeAnalysis
from fedtre.errors import FedtreError

logger = logging.getLogger(__name__)

_RELEASED = frozenset({Outcome.RELEASED, Outcome.SUPPRESSED})


@dataclass(frozen=True)
class NextRound:
    """Queue round `round` for `nodes`, with the job's new round state."""

    round: int
    round_state: dict[str, Any]
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    """End the job in `state` with its combined result."""

    state: JobState
    combined: dict[str, Any]
    round_state: dict[str, Any] = field(default_factory=dict)
    # Why the job did not complete, for the job's reason (one cause, stated once).
    reason: str = ""


@dataclass(frozen=True)
class Progress:
    """How far a multi-round job has got: round k of at most max_rounds, and latest figures."""

    round: int
    max_rounds: int
    figures: dict[str, Any]


def iterative(analysis: str) -> IterativeAnalysis | None:
    """Return the analysis when it runs in rounds, else None (unknown names too)."""
    try:
        found = get_analysis(analysis)
    except FedtreError:
        return None
    return found if isinstance(found, IterativeAnalysis) else None


def _initial(analysis: IterativeAnalysis, job: Job) -> dict[str, Any]:
    params = job.spec.params
    state = analysis.initial_state(params)
    return {
        "state": state,
        "params": analysis.round_params(params, state),
        "progress": {},
        "max_rounds": analysis.max_rounds(params),
        "nodes": list(job.spec.nodes),
        "excluded": {},
    }


def round_state(job: Job) -> dict[str, Any] | None:
    """Return the job's round state (computed for round 1), or None for a single-round job."""
    analysis = iterative(job.spec.analysis)
    if analysis is None:
        return None
    return job.round_state if job.round_state is not None else _initial(analysis, job)


def task_round_params(job: Job) -> dict[str, Any] | None:
    """Return the parameters of the job's current round for its tasks, or None (single round)."""
    state = round_state(job)
    return None if state is None else dict(state.get("params") or {})


def progress(job: Job) -> Progress | None:
    """Return a multi-round job's progress, or None for a single-round job."""
    state = round_state(job)
    if state is None:
        return None
    return Progress(job.round, int(state.get("max_rounds") or 0), dict(state.get("progress") or {}))


def next_step(job: Job) -> NextRound | Finished:
    """Decide what follows the job's current round, whose tasks are all done."""
    analysis = iterative(job.spec.analysis)
    if analysis is None:
        raise ValueError(f"job {job.id} is not a multi-round job")
    current = round_state(job) or {}
    k = job.round
    outputs: dict[str, NodeOutput] = {t.node: t.output for t in job.tasks if t.output is not None}
    released = {n: o for n, o in outputs.items() if o.outcome in _RELEASED}
    others = {n: o for n, o in outputs.items() if o.outcome not in _RELEASED}
    excluded: dict[str, str] = dict(current.get("excluded") or {})
    blocked = sorted(n for n, o in others.items() if o.outcome in (Outcome.BLOCKED, Outcome.HELD))

    def nodes_json() -> dict[str, Any]:
        left_out = {**excluded, **{n: o.outcome.value for n, o in others.items()}}
        return {"included": sorted(released), "excluded": dict(sorted(left_out.items()))}

    def end(state: JobState, error: str) -> Finished:
        combined = {"error": error, "round": k, "nodes": nodes_json()}
        progress = {**current, "progress": current.get("progress", {})}
        return Finished(state, combined, progress, reason=error)

    if others and (k > 1 or blocked or not released):
        reasons = describe_withheld(others)
        # PARTIAL: some node released and the others' disclosure rules withheld theirs.
        withheld_only = bool(released) and len(blocked) == len(others)
        state = JobState.PARTIAL if withheld_only else JobState.FAILED
        return end(state, f"round {k}: {reasons}; no result is released")
    excluded.update({n: o.outcome.value for n, o in others.items()})
    try:
        step = analysis.advance(job.spec.params, current.get("state") or {}, released)
    except FedtreError as exc:
        return end(JobState.FAILED, f"round {k}: {exc}")
    except Exception:
        # A combination bug must not leave the job running forever.
        logger.exception("combining a round failed", extra={"job_id": job.id, "round": k})
        return end(JobState.FAILED, f"round {k}: the results could not be combined")
    nodes = {"included": sorted(released), "excluded": dict(sorted(excluded.items()))}
    advanced = {
        **current,
        "state": step.state,
        "progress": step.progress,
        "nodes": sorted(released),
        "excluded": nodes["excluded"],
    }
    if step.done:
        combined = {**(step.result or {}), "nodes": nodes}
        state = JobState.PARTIAL if excluded else JobState.COMPLETED
        return Finished(state, combined, {**advanced, "params": {}})
    max_rounds = int(current.get("max_rounds") or 0)
    if k >= max_rounds:
        return end(JobState.FAILED, f"the analysis did not finish within {max_rounds} rounds")
    advanced["params"] = analysis.round_params(job.spec.params, step.state)
    return NextRound(k + 1, advanced, tuple(sorted(released)))
