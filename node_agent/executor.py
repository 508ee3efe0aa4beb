"""Executor: runs one task under local policy, checks its output, and records it exactly once.

The order of checks for one task (docs/disclosure.md):

1. local policy: analysis, dataset and columns served (else REFUSED);
2. the cohort rules, before anything is computed: the cohort is measured and remembered
   in the dataset's differencing memory (across all projects; whatever the outcome); a
   filtered cohort and its complement each hold at least the threshold, and the cohort
   is an earlier set asked by the same question or differs from every earlier one on the
   dataset by at least the threshold (else BLOCKED);
3. the analysis computes and applies its disclosure rules, and every value of its
   payload passes the release stage (fedtre.disclosure.release: threshold, cell-key
   perturbation, dominance, grid bounds, labels of released groups only);
4. the groups the output releases (levels of `by`, cells and margins of a table) pass
   the same differencing check, and are remembered (else BLOCKED);
5. what leaves shows each rule family in fixed words only (release.public_output);
6. review: when the TRE holds this analysis (or project) for its output checker, or a
   rule asks for review, the output is kept in the airlock and HELD is reported; the
   payload leaves only once the checker approves (node_agent.airlock).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from fedtre.analyses.base import Analysis, DataSource, NodeOutput, Outcome, RuleResult
from fedtre.analyses.derived import derived_names, with_derived
from fedtre.analyses.iterative import with_round
from fedtre.disclosure import differencing, release
from fedtre.disclosure.cellkey import keyed_source
from fedtre.disclosure.policy import UNKEYED
from fedtre.disclosure.rules import REVIEW, needs_review
from fedtre.errors import Conflict, DisclosureBlocked, FedtreError, InvalidRequest, NotFound
from node_agent.policy import LocalPolicy
from node_agent.state import RELEASING, AgentState
from node_agent.task import TaskSpec

__all__ = ["GENERIC_FAILURE", "Executor", "TaskSpec"]

logger = logging.getLogger(__name__)

# Cancellations remembered at most (the oldest are forgotten first).
MAX_CANCELLED = 10_000
# Cohorts of multi-round jobs kept for their later rounds (each holds its records' hashes).
MAX_ROUND_COHORTS = 4
# Waits before the retries of a computation that failed transiently (bounded: 3 attempts).
RETRY_DELAYS_S = (0.5, 2.0)

# SQLite result codes worth retrying: another writer holds the lock, or the file is briefly
# unreachable. Any other SQLite error (too many bound values, a missing table) would only
# fail again. Errors of other drivers' OperationalError are connection trouble: retried.
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN")

DATASET_UNAVAILABLE = (
    "the dataset is unavailable at this node (its data changed and could not be read); "
    "the TRE's operator can find the cause in the agent log under this task id"
)
GENERIC_FAILURE = (
    "the analysis failed at this node; the TRE's operator can find the cause "
    "in the agent log under this task id"
)


class Executor:
    """Runs tasks against the declared sources; safe to call from several threads."""

    def __init__(
        self,
        policy: LocalPolicy,
        sources: Mapping[str, DataSource],
        state: AgentState,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        """retry_delays: the waits before each retry of a computation that failed for a
        transient reason (the database unreachable or locked); their number bounds the retries."""
        self._policy = policy
        self._retry_delays = tuple(retry_delays)
        # The agent keys its sources with the TRE's secret at start-up (node_agent.app); a
        # source built without keys (a test's) is keyed here under the public test secret.
        self._sources = {
            name: source
            if source.record_key is not None
            else keyed_source(source, UNKEYED, policy.keys.get(name))
            for name, source in sources.items()
        }
        self._state = state
        self._guard = threading.Lock()
        self._running: dict[str, tuple[threading.Lock, list[int]]] = {}
        # Tasks the coordinator cancelled (job cancelled or timed out): task id -> reason.
        self._cancelled: dict[str, str] = {}
        # The cohort each multi-round job was measured on, so its later rounds (same
        # records) need not hash every record again: key -> Cohort, newest last.
        self._round_cohorts: dict[tuple[Any, ...], differencing.Cohort] = {}
        _check_keys(policy, sources)

    def _measure_cohort(
        self, task: TaskSpec, analysis: Any, params: Mapping[str, Any], source: DataSource
    ) -> differencing.Cohort:
        """The records the task describes; a later round of a job reuses its first measure."""
        cohort_filter = analysis.cohort_filter(params)
        universe_filter = analysis.universe_filter(params)
        key = self._policy.keys.get(task.dataset)
        cache_key = (
            task.job_id,
            task.dataset,
            json.dumps([cohort_filter, universe_filter, key], sort_keys=True, default=str),
        )
        if task.round is not None:
            with self._guard:
                cached = self._round_cohorts.get(cache_key)
            if cached is not None:
                return cached
        cohort = differencing.measure_cohort(
            source,
            cohort_filter,
            universe_filter,
            key=key,
            filtered=params.get("filter") is not None,
            groupings=analysis.groupings(params),
            question=differencing.question_of(
                params.get("filter"),
                cohort_filter,
                set(derived_names(params, self._sources[task.dataset].schema)),
            ),
        )
        if task.round is not None:
            with self._guard:
                self._round_cohorts[cache_key] = cohort
                while len(self._round_cohorts) > MAX_ROUND_COHORTS:
                    self._round_cohorts.pop(next(iter(self._round_cohorts)))
        return cohort

    def cancel(self, task_id: str, reason: str) -> None:
        """Stop task_id: if it has not finished, it ends FAILED and releases nothing.

        A task not yet started never runs; one running stops at the next check (before its
        output is recorded). A finished task is not changed.
        """
        with self._guard:
            if len(self._cancelled) >= MAX_CANCELLED:
                self._cancelled.pop(next(iter(self._cancelled)))
            self._cancelled[task_id] = reason or "cancelled by the coordinator"
        logger.info("task cancelled by the coordinator", extra={"task_id": task_id})

    def _cancel_reason(self, task_id: str) -> str | None:
        with self._guard:
            return self._cancelled.get(task_id)

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
            output, candidate = self._execute(task)
            # Each rule shows the TRE's setting it applied (policy, never data).
            policy = self._policy.disclosure_for(task.project)
            output = release.with_settings(output, policy)
            candidate = release.with_settings(candidate, policy) if candidate else None
            cancelled = self._cancel_reason(task.task_id)
            if cancelled is not None:
                # Checked after the work and before anything is recorded as released.
                output, candidate = (
                    NodeOutput(Outcome.FAILED, {}, error=f"cancelled: {cancelled}"),
                    None,
                )
            if candidate is not None:
                self._state.record_held(task.task_id, output, candidate)
                logger.info("output held for the output checker", extra=_ids(task))
            else:
                self._state.record_result(task.task_id, output)
            logger.info("task finished", extra={**_ids(task), "outcome": output.outcome.value})
            return output

    def _execute(self, task: TaskSpec) -> tuple[NodeOutput, NodeOutput | None]:
        """Return the output to report and, when it is held, the output awaiting review."""
        cancelled = self._cancel_reason(task.task_id)
        if cancelled is not None:
            return NodeOutput(Outcome.FAILED, {}, error=f"cancelled: {cancelled}"), None
        try:
            reasons = self._policy.check_task(task)
            if reasons:
                return NodeOutput(Outcome.REFUSED, {}, error="; ".join(reasons)), None
            analysis = self._policy.analyses[task.analysis]
            try:
                params = analysis.validate(task.params)
                if task.round is not None:
                    # a round of a multi-round job: the coordinator's parameters, checked
                    params = with_round(analysis, params, task.round)
            except InvalidRequest as exc:
                return NodeOutput(Outcome.REFUSED, {}, error=str(exc)), None
            policy = self._policy.disclosure_for(task.project)
            declared = self._sources[task.dataset]
            if declared.refresh is not None:
                # A file dataset's extract follows its file. What is wrong with a changed
                # file (its path, how many values do not fit) is the operator's to read.
                try:
                    declared.refresh()
                except FedtreError as exc:
                    logger.error("dataset %r unavailable: %s", task.dataset, exc, extra=_ids(task))
                    return NodeOutput(Outcome.FAILED, {}, error=DATASET_UNAVAILABLE), None
            # Derived variables become columns of the source (computed by its engine), so
            # the cohort, the groups and the computation all read them as declared ones.
            source = with_derived(declared, params)
            checked: list[RuleResult] = []
            cohort = None
            if policy.threshold > 1:  # below 2, no difference is both non-zero and too small
                cohort = self._measure_cohort(task, analysis, params, source)
                # Remembered whatever follows: a blocked query counts toward the memory too.
                closest = self._state.check_and_record_sets(
                    task.project,
                    task.dataset,
                    cohort.scheme,
                    [cohort.whole],
                    policy,
                    task.task_id,
                    remember_on_conflict=True,
                )
                size_rule = differencing.cohort_size_rule(cohort, policy)
                checked.append(size_rule)
                if not size_rule.passed:
                    return NodeOutput(Outcome.BLOCKED, {}, tuple(checked)), None
                checked.append(differencing.differencing_rule(closest, policy))
                if closest is not None:
                    return NodeOutput(Outcome.BLOCKED, {}, tuple(checked)), None
            raw = self._compute(task, analysis, params, source)
            output = _sealed(analysis, analysis.check(params, raw, policy), task)
            checked += output.rules
            if output.outcome not in (Outcome.RELEASED, Outcome.SUPPRESSED):
                return NodeOutput(output.outcome, {}, tuple(checked), output.error), None
            if cohort is not None and cohort.groups:
                # The groups the output releases (levels of `by`, cells and margins) are
                # compared like cohorts, and remembered once released.
                released = analysis.released_groups(params, output.payload)
                closest = self._state.check_and_record_sets(
                    task.project,
                    task.dataset,
                    cohort.scheme,
                    cohort.released_groups(released),
                    policy,
                    task.task_id,
                    remember_on_conflict=False,
                )
                if closest is not None:
                    checked.append(differencing.differencing_rule(closest, policy))
                    return NodeOutput(Outcome.BLOCKED, {}, tuple(checked)), None
            if policy.holds(task.analysis) and not needs_review(checked):
                scope = f"{task.analysis} outputs" + (
                    f" of project {task.project!r}" if task.project else ""
                )
                checked.append(
                    RuleResult(
                        REVIEW, False, f"this TRE's output checker reviews {scope} before release"
                    )
                )
            final = NodeOutput(output.outcome, output.payload, tuple(checked), output.error)
            if needs_review(checked):
                return NodeOutput(Outcome.HELD, {}, final.rules), final
            return final, None
        except DisclosureBlocked as exc:
            return NodeOutput(Outcome.BLOCKED, {}, error=str(exc)), None
        except FedtreError as exc:
            # FedtreError messages are public by contract (fedtre/errors.py).
            return NodeOutput(Outcome.FAILED, {}, error=str(exc)), None
        except sa.exc.SQLAlchemyError as exc:
            # One line, no SQL and no bound values: the statement text holds the seed of the
            # TRE's record keys, and a driver's message can quote the statement.
            orig = getattr(exc, "orig", None)
            logger.error(
                "task failed: the database refused the query (%s%s)",
                type(exc).__name__,
                f": {type(orig).__name__}" if orig is not None else "",
                extra=_ids(task),
            )
            return NodeOutput(Outcome.FAILED, {}, error=GENERIC_FAILURE), None
        except Exception:
            logger.exception("task failed", extra=_ids(task))
            return NodeOutput(Outcome.FAILED, {}, error=GENERIC_FAILURE), None

    def _compute(
        self, task: TaskSpec, analysis: Any, params: Mapping[str, Any], source: DataSource
    ) -> Any:
        """Run the computation, retrying a bounded number of times while it fails transiently."""
        for attempt, delay in enumerate((*self._retry_delays, None), start=1):
            try:
                return analysis.compute(params, source)
            except sa.exc.OperationalError as exc:
                # Connection lost, database locked or restarting: worth another try; the
                # query is read-only, so running it again changes nothing.
                if not _transient(exc):
                    raise
                if delay is None or self._cancel_reason(task.task_id) is not None:
                    # One line: fedtre.logs names the error without its SQL or values.
                    logger.error(
                        "task failed: the database did not answer",
                        exc_info=exc,
                        extra={**_ids(task), "attempts": attempt},
                    )
                    raise FedtreError(
                        f"the TRE's database did not answer after {attempt} attempts "
                        f"({type(exc.orig).__name__}); the TRE's operator can find the cause "
                        "in the agent log under this task id"
                    ) from exc
                logger.warning(
                    "transient failure; retrying",
                    extra={**_ids(task), "attempt": attempt, "delay_s": delay},
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

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


def _sealed(analysis: Analysis, output: NodeOutput, task: TaskSpec) -> NodeOutput:
    """Return output fit to leave: a non-releasing outcome carries no payload; every value of
    a released payload passed the release stage (release.seal); JSON-safe."""
    if not isinstance(output, NodeOutput):
        raise TypeError(f"analysis {task.analysis!r} returned {type(output).__name__}")
    if output.outcome not in RELEASING and output.payload:
        logger.debug("dropped the payload of a non-released output", extra=_ids(task))
        output = NodeOutput(output.outcome, {}, output.rules, output.error)
    if output.outcome in RELEASING:
        fields = {path: release.Kind(kind) for path, kind in analysis.released_fields.items()}
        sealed = release.seal(analysis.name, output.payload, fields)
        output = NodeOutput(output.outcome, sealed, output.rules, output.error)
    # Raises on values the state and the wire cannot hold: objects, NaN and infinities.
    json.dumps(output.payload, allow_nan=False)
    return output


def _check_keys(policy: LocalPolicy, sources: Mapping[str, DataSource]) -> None:
    """Raise NotFound, at start-up, when a dataset's declared key column cannot be read."""
    for dataset, key in policy.keys.items():
        source = sources.get(dataset)
        if source is None:
            continue
        column: sa.ColumnClause[Any] = sa.column(key)
        query = sa.select(column).select_from(source.table).where(sa.false())
        try:
            with source.engine.connect() as conn:
                conn.execute(query).all()
        except sa.exc.SQLAlchemyError as exc:
            raise NotFound(
                f"dataset {dataset!r}: its key column {key!r} cannot be read from its table "
                f"({type(exc).__name__}); correct [datasets.{dataset}] key or remove it"
            ) from exc


def _transient(exc: sa.exc.OperationalError) -> bool:
    name = getattr(exc.orig, "sqlite_errorname", None)
    if not isinstance(name, str):
        return True
    return any(name == code or name.startswith(code + "_") for code in _SQLITE_TRANSIENT)


def _ids(task: TaskSpec) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "job_id": task.job_id,
        "analysis": task.analysis,
        "dataset": task.dataset,
    }
