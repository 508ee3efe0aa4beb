"""The agent's Prometheus metrics, on one explicit registry per agent.

Fed from outside the executor: a wrapper around its run callable (tasks, outcomes, rule
checks, durations), SQLAlchemy cursor events on the data sources' engines (query time),
and a callback of the connection (reconnects). Labels are bounded: analysis (the ones
this agent serves, else "other"), outcome, rule, dataset; never a task id or a value.

An output held for the TRE's output checker counts as outcome "held" when it runs; its
"review" rule is a hold, not a failed disclosure check, so it is not counted then. A task
waiting for the TRE's operator ([governance] operator_approval) counts as outcome
"awaiting_operator", and its operator_approval rule is not counted as a check either. The
checker's decision, once reported, counts in fedtre_agent_reviewed_outputs_total by final
outcome (released when approved, blocked when denied) and as a review check passed or
failed. Counters have no `_created` series (prometheus_client.disable_created_metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from fedtre.analyses.base import DataSource, NodeOutput, Outcome
from fedtre.disclosure.rules import OPERATOR_APPROVAL, REVIEW
from node_agent.task import TaskSpec

OTHER = "other"
AWAITING_OPERATOR = "awaiting_operator"
# Rules that hold a task for a person rather than check its output.
_HOLDS = frozenset({REVIEW, OPERATOR_APPROVAL})
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)
_STARTED = "fedtre_query_started"


class AgentMetrics:
    """Every agent metric; see instrument_run, watch_sources and the connection's callback."""

    def __init__(
        self,
        node_id: str,
        version: str,
        analyses: Collection[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        disable_created_metrics()  # process-wide in prometheus_client; see the docstring
        self.registry = registry if registry is not None else CollectorRegistry()
        self._analyses = frozenset(analyses)
        r = self.registry
        self.tasks = Counter(
            "fedtre_agent_tasks_total",
            "Tasks this agent ran, by analysis and outcome "
            "(released, suppressed, blocked, refused, failed, held for the output checker, "
            "or awaiting_operator: waiting for the TRE's operator to approve).",
            ["analysis", "outcome"],
            registry=r,
        )
        self.redelivered = Counter(
            "fedtre_agent_tasks_redelivered_total",
            "Tasks delivered again and answered from the stored result, without running.",
            registry=r,
        )
        self.reviewed = Counter(
            "fedtre_agent_reviewed_outputs_total",
            "Held outputs the TRE's output checker decided, reported to the coordinator, by "
            "final outcome (released when approved, blocked when denied).",
            ["outcome"],
            registry=r,
        )
        self.task_duration = Histogram(
            "fedtre_agent_task_duration_seconds",
            "Seconds to run a task (policy check, query, disclosure check, recording), by analysis.",
            ["analysis"],
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge("fedtre_agent_tasks_in_progress", "Tasks running now.", registry=r)
        self.disclosure_checks = Counter(
            "fedtre_agent_disclosure_checks_total",
            "Disclosure rule checks of this agent's outputs, by rule and result (passed or failed).",
            ["rule", "result"],
            registry=r,
        )
        self.query_duration = Histogram(
            "fedtre_agent_source_query_duration_seconds",
            "Seconds the data source's database took per SQL statement, by dataset.",
            ["dataset"],
            buckets=QUERY_BUCKETS,
            registry=r,
        )
        self.query_errors = Counter(
            "fedtre_agent_source_query_errors_total",
            "SQL statements on a data source that raised an error, by dataset.",
            ["dataset"],
            registry=r,
        )
        self.reconnects = Counter(
            "fedtre_agent_reconnects_total",
            "Times the task stream was lost (or could not be opened) and the agent dialled again.",
            registry=r,
        )
        self.connected = Gauge(
            "fedtre_agent_connected",
            "1 while the task stream to the coordinator is open, else 0.",
            registry=r,
        )
        info = Gauge(
            "fedtre_agent_info",
            "Constant 1, labelled with this agent's node id and version.",
            ["node", "version"],
            registry=r,
        )
        info.labels(node_id, version).set(1)

    def analysis_label(self, analysis: str) -> str:
        # The coordinator names the analysis; only the ones this agent serves become labels.
        return analysis if analysis in self._analyses else OTHER

    def task_ran(self, task: TaskSpec, output: NodeOutput, seconds: float) -> None:
        analysis = self.analysis_label(task.analysis)
        self.tasks.labels(analysis, _outcome_label(output)).inc()
        self.task_duration.labels(analysis).observe(seconds)
        held = output.outcome is Outcome.HELD
        for rule in output.rules:
            if held and rule.rule in _HOLDS:
                continue  # waiting for a person; output_reviewed counts the checker's decision
            self.disclosure_checks.labels(rule.rule, "passed" if rule.passed else "failed").inc()

    def output_reviewed(self, output: NodeOutput) -> None:
        """Count a held output's final outcome, reported after the checker's decision."""
        self.reviewed.labels(output.outcome.value).inc()
        for rule in output.rules:
            if rule.rule == REVIEW:
                self.disclosure_checks.labels(REVIEW, "passed" if rule.passed else "failed").inc()


def _outcome_label(output: NodeOutput) -> str:
    """The task's outcome label: a held task waiting for the TRE's operator (not for the
    output checker, as "held" means) is "awaiting_operator"."""
    if output.outcome is Outcome.HELD and any(
        r.rule == OPERATOR_APPROVAL and not r.passed for r in output.rules
    ):
        return AWAITING_OPERATOR
    return output.outcome.value


def instrument_run(
    run: Callable[[TaskSpec], NodeOutput],
    already_done: Callable[[str], bool],
    metrics: AgentMetrics,
) -> Callable[[TaskSpec], NodeOutput]:
    """Return run, measured: each task counted once, by outcome, with its duration.

    already_done(task_id) tells a redelivered task (answered from the agent's state) from
    one that runs; two deliveries racing each other may both count as runs.
    """

    def measured(task: TaskSpec) -> NodeOutput:
        if already_done(task.task_id):
            metrics.redelivered.inc()
            return run(task)
        started = time.perf_counter()
        with metrics.in_progress.track_inprogress():
            output = run(task)
        metrics.task_ran(task, output, time.perf_counter() - started)
        return output

    return measured


def watch_sources(sources: Mapping[str, DataSource], metrics: AgentMetrics) -> None:
    """Time every SQL statement the sources' engines execute, by dataset (never the SQL)."""
    for name, source in sources.items():
        _watch_engine(source.engine, name, metrics)


def _watch_engine(engine: sa.Engine, dataset: str, metrics: AgentMetrics) -> None:
    histogram = metrics.query_duration.labels(dataset)
    errors = metrics.query_errors.labels(dataset)

    # A stack in the connection's info dict: one connection runs one statement at a
    # time, and a failed statement pops its start in handle_error instead.
    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: sa.Connection, *_: Any) -> None:
        conn.info.setdefault(_STARTED, []).append(time.perf_counter())

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: sa.Connection, *_: Any) -> None:
        started = conn.info.get(_STARTED)
        if started:
            histogram.observe(time.perf_counter() - started.pop())

    @sa.event.listens_for(engine, "handle_error")
    def _error(context: Any) -> None:
        errors.inc()
        conn = context.connection
        started = conn.info.get(_STARTED) if conn is not None else None
        if started:
            started.pop()
