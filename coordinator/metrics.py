"""The coordinator's Prometheus metrics, on one explicit registry per coordinator.

Two kinds, as in Dramatiq's Prometheus middleware: event metrics (counters, histograms)
that the service and the gRPC interceptor increment where things happen, and state
metrics (jobs by state, queues, nodes) that a collector reads from the store at scrape
time, so they are right after a restart and with several replicas. Labels are bounded:
node, analysis, state, outcome, rule, method, code; never a job or task id.

Counters have no `_created` series (prometheus_client.disable_created_metrics): they
double the series count and no dashboard or alert here reads them.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.domain.model import Job, JobState, Task, TaskState
from coordinator.domain.status import NetworkStatus
from coordinator.store.store import Store
from fedtre import __version__

logger = logging.getLogger(__name__)

# Seconds from approval to delivery: milliseconds when the node is online, up to hours
# when it is not.
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Items per group-commit transaction: 1 on a quiet coordinator, up to the batch cap.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
JOB_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600, 86400
)  # fmt: skip
OTHER = "other"


class LabelGuard:
    """Caps the distinct values of a label whose values another party chooses.

    Rule names arrive from agents; past `limit` distinct values, new ones become "other"
    so a misbehaving agent cannot blow up the number of series.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value[:64]
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
            return value


class CoordinatorMetrics:
    """Every coordinator metric; the service calls the event methods, the store feeds the rest."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # process-wide in prometheus_client; see the docstring
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        build = Gauge(
            "fedtre_build_info",
            "Constant 1, labelled with the coordinator's fedtre version and Python version.",
            ["version", "python"],
            registry=r,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.certificate_expiry = Gauge(
            "fedtre_certificate_expiry_timestamp_seconds",
            "Unix time a certificate stops being valid (not after): the coordinator's own "
            "(role coordinator) and each node's, as its agent last presented it (role node).",
            ["role", "subject"],
            registry=r,
        )
        self.jobs_submitted = Counter(
            "fedtre_jobs_submitted_total",
            "Jobs accepted for approval, by analysis.",
            ["analysis"],
            registry=r,
        )
        self.jobs_finished = Counter(
            "fedtre_jobs_finished_total",
            "Jobs that reached a final state (completed, partial, failed or rejected), "
            "by analysis and state.",
            ["analysis", "state"],
            registry=r,
        )
        self.job_duration = Histogram(
            "fedtre_job_duration_seconds",
            "Seconds from a job's approval to its final state, by analysis.",
            ["analysis"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "fedtre_task_dispatch_latency_seconds",
            "Seconds from a task entering its node's queue (at approval, or again when its "
            "node reconnects with it unreported) to its delivery to the node, by node.",
            ["node"],
            buckets=DISPATCH_BUCKETS,
            registry=r,
        )
        self.task_outcomes = Counter(
            "fedtre_task_outcomes_total",
            "Node outputs of finished jobs, by node, analysis and outcome "
            "(released, suppressed, blocked, refused, failed).",
            ["node", "analysis", "outcome"],
            registry=r,
        )
        self.disclosure_checks = Counter(
            "fedtre_disclosure_checks_total",
            "Disclosure rule checks that nodes reported for finished jobs, by node, rule "
            "and result (passed or failed).",
            ["node", "rule", "result"],
            registry=r,
        )
        self.grpc_requests = Counter(
            "fedtre_grpc_requests_total",
            "gRPC calls handled, by full method name and status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_duration = Histogram(
            "fedtre_grpc_request_duration_seconds",
            "Seconds to handle a unary gRPC call, by full method name.",
            ["method"],
            registry=r,
        )
        self.write_batch_size = Histogram(
            "fedtre_write_batch_size",
            "Agents' calls written in one transaction (group commit), by kind: dispatch "
            "(task streams woken together), report (results) or heartbeat.",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tasks_timed_out = Counter(
            "fedtre_tasks_timed_out_total",
            "Tasks a node did not answer by their job's deadline (or gave up for a node "
            "paused for maintenance when the job chose to finish without it), by node.",
            ["node"],
            registry=r,
        )
        self.database_up = Gauge(
            "fedtre_database_up",
            "1 when the last health check reached the coordinator database, else 0.",
            registry=r,
        )
        self.database_up.set(1)
        self._nodes = LabelGuard(1000)
        self._rules = LabelGuard(100)

    def watch_store(self, store: Store, clock: Callable[[], datetime]) -> None:
        """Add the state metrics, read from store at each scrape."""
        self.registry.register(StateCollector(store, clock))

    # -- events --------------------------------------------------------------------------

    def certificate_seen(self, role: str, name: str, not_after: datetime) -> None:
        """Record when a certificate expires (not_after, timezone-aware UTC)."""
        label = self._nodes(name) if role == "node" else name
        self.certificate_expiry.labels(role, label).set(not_after.timestamp())

    def job_submitted(self, job: Job) -> None:
        self.jobs_submitted.labels(job.spec.analysis).inc()

    def job_rejected(self, job: Job) -> None:
        self.jobs_finished.labels(job.spec.analysis, JobState.REJECTED.value).inc()

    def job_finished(self, job: Job, state: JobState, now: datetime) -> None:
        """Count a job that just finished, and its nodes' outcomes and rule checks."""
        analysis = job.spec.analysis
        self.jobs_finished.labels(analysis, state.value).inc()
        if job.decided_at is not None:
            seconds = (now - job.decided_at).total_seconds()
            self.job_duration.labels(analysis).observe(max(0.0, seconds))
        for task in job.tasks:
            if task.output is None:
                continue
            node = self._nodes(task.node)
            self.task_outcomes.labels(node, analysis, task.output.outcome.value).inc()
            for rule in task.output.rules:
                result = "passed" if rule.passed else "failed"
                self.disclosure_checks.labels(node, self._rules(rule.rule), result).inc()

    def task_timed_out(self, node: str) -> None:
        self.tasks_timed_out.labels(self._nodes(node)).inc()

    def job_cancelled(self, job: Job) -> None:
        self.jobs_finished.labels(job.spec.analysis, JobState.CANCELLED.value).inc()

    def tasks_delivered(self, tasks: Iterable[Task], now: datetime) -> None:
        for task in tasks:
            if task.queued_at is not None:
                seconds = (now - task.queued_at).total_seconds()
                self.dispatch_latency.labels(self._nodes(task.node)).observe(max(0.0, seconds))

    def grpc_call(self, method: str, code: str, seconds: float | None) -> None:
        self.grpc_requests.labels(method, code).inc()
        if seconds is not None:
            self.grpc_duration.labels(method).observe(seconds)


class StateCollector(Collector):
    """Reads the store at scrape time: jobs, tasks, queues and nodes."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering does not query the database.
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        try:
            status = self._store.network_status(recent_failures=0)
            audit_entries = self._store.governance.audit_size()
        except Exception as exc:
            # The scrape still serves the event metrics and fedtre_database_up.
            logger.warning(
                "cannot read state metrics from the database",
                extra={"error": type(exc).__name__},
            )
            return []
        return _families(status, self._clock(), audit_entries)


def _families(
    status: NetworkStatus | None = None, now: datetime | None = None, audit_entries: int = 0
) -> list[Metric]:
    jobs = GaugeMetricFamily("fedtre_jobs", "Jobs in each state.", labels=["state"])
    tasks = GaugeMetricFamily(
        "fedtre_tasks",
        "Tasks in each state (queued, delivered, done), by node.",
        labels=["node", "state"],
    )
    queue = GaugeMetricFamily(
        "fedtre_queue_depth", "Tasks queued for a node and not yet delivered.", labels=["node"]
    )
    oldest = GaugeMetricFamily(
        "fedtre_task_oldest_age_seconds",
        "Age of a node's longest-waiting queued task (since queued) or longest-outstanding "
        "delivered task (since delivered); 0 when there is none.",
        labels=["node", "state"],
    )
    connected = GaugeMetricFamily(
        "fedtre_agents_connected", "Nodes whose agent holds an open task stream."
    )
    online = GaugeMetricFamily(
        "fedtre_node_online", "1 while the node's agent is connected, else 0.", labels=["node"]
    )
    last_seen = GaugeMetricFamily(
        "fedtre_node_last_seen_timestamp_seconds",
        "Unix time the node's agent last connected (while online) or disconnected (offline).",
        labels=["node"],
    )
    audit = GaugeMetricFamily(
        "fedtre_audit_log_entries", "Entries in the coordinator's hash-chained audit log."
    )
    families: list[Metric] = [jobs, tasks, queue, oldest, connected, online, last_seen, audit]
    if status is None or now is None:
        return families
    audit.add_metric([], audit_entries)
    for state, count in status.jobs_by_state.items():
        jobs.add_metric([state.value], count)
    for (node, task_state), count in sorted(status.tasks_by_node_state.items()):
        tasks.add_metric([node, task_state.value], count)
    connected.add_metric([], sum(1 for n in status.nodes if n.online))
    for n in status.nodes:
        queue.add_metric([n.node_id], n.queued)
        oldest.add_metric([n.node_id, TaskState.QUEUED.value], _age(n.oldest_queued_at, now))
        oldest.add_metric([n.node_id, TaskState.DELIVERED.value], _age(n.oldest_delivered_at, now))
        online.add_metric([n.node_id], 1 if n.online else 0)
        if n.last_seen is not None:
            last_seen.add_metric([n.node_id], n.last_seen.timestamp())
    return families


def _age(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())
