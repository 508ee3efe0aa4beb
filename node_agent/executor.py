"""Executor: runs one task under local policy, checks its output, and records it exactly once."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fedtre.analyses.base import DataSource, NodeOutput, Outcome
from fedtre.errors import Conflict, DisclosureBlocked, FedtreError, InvalidRequest
from node_agent.policy import LocalPolicy
from node_agent.state import RELEASING, AgentState
from node_agent.task import TaskSpec

__all__ = ["GENERIC_FAILURE", "Executor", "TaskSpec"]

logger = logging.getLogger(__name__)

GENERIC_FAILURE = (
    "the analysis failed at this node; the TRE's operator can find the cause "
    "in the agent log under this task id"
)


class Executor:
    """Runs tasks against the declared sources; safe to call from several threads."""

    def __init__(
        self, policy: LocalPolicy, sources: Mapping[str, DataSource], state: AgentState
    ) -> None:
        self._policy = policy
        self._sources = sources
        self._state = state
        self._guard = threading.Lock()
        self._running: dict[str, tuple[threading.Lock, list[int]]] = {}

    def run(self, task: TaskSpec) -> NodeOutput:
        """Return task's checked output, recorded in the agent state before it is returned.

        A task that already has a recorded result returns it unchanged: nothing is
        recomputed or released twice. Failures of the task become REFUSED, BLOCKED or
        FAILED outputs; only a failure of the state store itself raises, and then nothing
        was recorded, so nothing may be released.
        """
        with self._exclusive(task.task_id):
            stored = self._state.stored_result(task.task_id)
            if stored is not None:
                logger.info("task redelivered; returning its stored result", extra=_ids(task))
                return stored
            try:
                self._state.record_received(task)
            except Conflict as exc:
                logger.warning("task id reused with different content", extra=_ids(task))
                return NodeOutput(Outcome.REFUSED, {}, error=str(exc))
            output = self._execute(task)
            self._state.record_result(task.task_id, output)
            logger.info("task finished", extra={**_ids(task), "outcome": output.outcome.value})
            return output

    def _execute(self, task: TaskSpec) -> NodeOutput:
        try:
            reasons = self._policy.check_task(task)
            if reasons:
                return NodeOutput(Outcome.REFUSED, {}, error="; ".join(reasons))
            analysis = self._policy.analyses[task.analysis]
            try:
                params = analysis.validate(task.params)
            except InvalidRequest as exc:
                return NodeOutput(Outcome.REFUSED, {}, error=str(exc))
            raw = analysis.compute(params, self._sources[task.dataset])
            return _sealed(analysis.check(params, raw, self._policy.disclosure), task)
        except DisclosureBlocked as exc:
            return NodeOutput(Outcome.BLOCKED, {}, error=str(exc))
        except FedtreError as exc:
            # FedtreError messages are public by contract (fedtre/errors.py).
            return NodeOutput(Outcome.FAILED, {}, error=str(exc))
        except Exception:
            logger.exception("task failed", extra=_ids(task))
            return NodeOutput(Outcome.FAILED, {}, error=GENERIC_FAILURE)

    @contextmanager
    def _exclusive(self, task_id: str) -> Iterator[None]:
        # Redelivery can overlap a run in progress; the second waits, then finds the result.
        with self._guard:
            lock, users = self._running.setdefault(task_id, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._running[task_id]


def _sealed(output: NodeOutput, task: TaskSpec) -> NodeOutput:
    """Return output fit to leave: a non-releasing outcome carries no payload; JSON-safe."""
    if not isinstance(output, NodeOutput):
        raise TypeError(f"analysis {task.analysis!r} returned {type(output).__name__}")
    if output.outcome not in RELEASING and output.payload:
        logger.warning("dropped the payload of a non-released output", extra=_ids(task))
        output = NodeOutput(output.outcome, {}, output.rules, output.error)
    json.dumps(output.payload)  # raises TypeError on values the state and the wire cannot hold
    return output


def _ids(task: TaskSpec) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "job_id": task.job_id,
        "analysis": task.analysis,
        "dataset": task.dataset,
    }
