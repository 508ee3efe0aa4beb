"""The coordinator's /metrics against a real network: every count equals what happened."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from ops_testkit import DATA, scrape, value, wait_for

from fedtre.errors import InvalidRequest, PermissionDenied
from fedtre.testing import LocalNetwork

SUBMIT = "/fedtre.v1.JobService/SubmitJob"
APPROVE = "/fedtre.v1.JobService/ApproveJob"


def test_event_and_state_metrics_equal_what_happened():
    with LocalNetwork(DATA, metrics=True, auto_approve=False) as net:
        researcher, admin = net.client(), net.client("admin")
        port = net.coordinator.metrics_port
        # Given three counts and a crosstab approved, one count rejected, a submission
        # refused for a missing dataset and an approval tried by a researcher,
        handles = [researcher.submit("count", dataset="cohort") for _ in range(3)]
        handles.append(researcher.submit("crosstab", dataset="cohort", params={"rows": "sex"}))
        for handle in handles:
            admin.approve(handle.id)
        rejected = researcher.submit("count", dataset="cohort")
        admin.reject(rejected.id, "outside the project's scope")
        with pytest.raises(InvalidRequest):
            researcher.submit("count", dataset="no_such_dataset")
        with pytest.raises(PermissionDenied):
            researcher.approve(rejected.id)
        results = [handle.result(timeout=20) for handle in handles]
        jobs = admin.jobs(limit=100)

        # when the coordinator is scraped once every job's completion has been counted,
        samples = wait_for(
            lambda: (
                (s := scrape(port))
                and sum(v for (n, _), v in s.items() if n == "fedtre_jobs_finished_total") == 5
                and s
            ),
            what="five finished jobs in the metrics",
        )
        audit_entries = list(net.coordinator.store.governance.audit_entries())

    # then the event counters match the jobs submitted, approved and rejected,
    assert value(samples, "fedtre_jobs_submitted_total", analysis="count") == 4
    assert value(samples, "fedtre_jobs_submitted_total", analysis="crosstab") == 1
    assert value(samples, "fedtre_jobs_finished_total", analysis="count", state="rejected") == 1
    finished = Counter((r.job.analysis, r.state) for r in results)
    for (analysis, state), count in finished.items():
        assert value(samples, "fedtre_jobs_finished_total", analysis=analysis, state=state) == count
    assert value(samples, "fedtre_job_duration_seconds_count", analysis="count") == 3
    assert value(samples, "fedtre_job_duration_seconds_count", analysis="crosstab") == 1
    for node in DATA:
        assert value(samples, "fedtre_task_dispatch_latency_seconds_count", node=node) == 4
    # each node's outcomes and failed rules match what the researcher sees,
    outcomes = Counter(
        (node, r.job.analysis, part.outcome) for r in results for node, part in r.nodes.items()
    )
    assert outcomes  # the network answered
    for (node, analysis, outcome), count in outcomes.items():
        assert (
            value(
                samples, "fedtre_task_outcomes_total", node=node, analysis=analysis, outcome=outcome
            )
            == count
        )
    assert sum(v for (n, _), v in samples.items() if n == "fedtre_task_outcomes_total") == 12
    checks = Counter(
        (node, rule.rule, "passed" if rule.passed else "failed")
        for r in results
        for node, part in r.nodes.items()
        for rule in part.rules
    )
    for (node, rule, result), count in checks.items():
        assert (
            value(samples, "fedtre_disclosure_checks_total", node=node, rule=rule, result=result)
            == count
        )
    # gRPC calls are counted by method and status code,
    assert value(samples, "fedtre_grpc_requests_total", method=SUBMIT, code="OK") == 5
    assert value(samples, "fedtre_grpc_requests_total", method=SUBMIT, code="INVALID_ARGUMENT") == 1
    assert value(samples, "fedtre_grpc_requests_total", method=APPROVE, code="OK") == 4
    assert (
        value(samples, "fedtre_grpc_requests_total", method=APPROVE, code="PERMISSION_DENIED") == 1
    )
    # the state gauges match the database,
    by_state = Counter(j.state for j in jobs)
    for state in ("pending_approval", "running", "completed", "partial", "failed", "rejected"):
        assert value(samples, "fedtre_jobs", state=state) == by_state[state]
    for node in DATA:
        assert value(samples, "fedtre_tasks", node=node, state="done") == 4
        assert value(samples, "fedtre_queue_depth", node=node) == 0
        assert value(samples, "fedtre_node_online", node=node) == 1
    assert value(samples, "fedtre_agents_connected") == 3
    assert value(samples, "fedtre_database_up") == 1
    # the audit-log gauge counts its entries (read back independently, entry by entry),
    assert audit_entries
    assert value(samples, "fedtre_audit_log_entries") == len(audit_entries)
    # and no label carries a job or task id.
    task_ids = {part.task_id for r in results for part in r.nodes.values()}
    labels = {(k, v) for (_, pairs) in samples for k, v in pairs}
    assert not {k for k, _ in labels} & {"job_id", "task_id", "job", "task"}
    assert not {v for _, v in labels} & task_ids


def test_an_offline_nodes_tasks_wait_in_its_queue_until_it_reconnects():
    with LocalNetwork(DATA, metrics=True) as net:
        port = net.coordinator.metrics_port
        researcher = net.client()
        # Given tre-c's agent stopped,
        net.stop_agent("tre-c")
        wait_for(
            lambda: value(scrape(port), "fedtre_node_online", node="tre-c") == 0,
            what="tre-c offline",
        )
        # when a job is submitted (auto-approved) to all three nodes,
        handle = researcher.submit("count", dataset="cohort")
        queued_by = time.monotonic()
        samples = wait_for(
            lambda: (
                (s := scrape(port))
                and value(s, "fedtre_tasks", node="tre-a", state="done") == 1
                and value(s, "fedtre_tasks", node="tre-b", state="done") == 1
                and s
            ),
            what="tre-a and tre-b to answer",
        )

        # then its task waits in tre-c's queue and the job runs on,
        assert value(samples, "fedtre_queue_depth", node="tre-c") == 1
        assert value(samples, "fedtre_queue_depth", node="tre-a") == 0
        assert value(samples, "fedtre_task_oldest_age_seconds", node="tre-c", state="queued") > 0
        assert value(samples, "fedtre_agents_connected") == 2
        assert value(samples, "fedtre_jobs", state="running") == 1
        assert value(samples, "fedtre_task_dispatch_latency_seconds_count", node="tre-c") == 0

        # and once tre-c reconnects it is delivered, its wait measured as dispatch latency.
        waited = time.monotonic() - queued_by
        net.start_agent("tre-c", DATA["tre-c"])
        assert handle.result(timeout=20).state in ("completed", "partial")
        samples = scrape(port)
    assert value(samples, "fedtre_queue_depth", node="tre-c") == 0
    assert value(samples, "fedtre_task_oldest_age_seconds", node="tre-c", state="queued") == 0
    assert value(samples, "fedtre_task_dispatch_latency_seconds_count", node="tre-c") == 1
    assert value(samples, "fedtre_task_dispatch_latency_seconds_sum", node="tre-c") >= waited


def test_build_info_and_certificate_expiry_without_created_series():
    from cryptography import x509

    import fedtre

    def not_after(path) -> float:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return cert.not_valid_after_utc.timestamp()

    with LocalNetwork(DATA, metrics=True) as net:
        # Given a network whose agents have connected and answered a job,
        net.client().submit("count", dataset="cohort").result(timeout=20)
        # when the coordinator is scraped,
        samples = scrape(net.coordinator.metrics_port)
        pki = net.pki
        expected = {
            ("coordinator", "coordinator"): not_after(pki / "coordinator" / "cert.pem"),
            ("ca", "ca"): not_after(pki / "coordinator" / "ca.pem"),
            **{("node", node): not_after(pki / "nodes" / node / "cert.pem") for node in DATA},
        }

    # then it states its build,
    builds = [labels for (name, labels) in samples if name == "fedtre_build_info"]
    assert len(builds) == 1 and dict(builds[0])["version"] == fedtre.__version__
    assert samples[("fedtre_build_info", builds[0])] == 1
    # the expiry of its own certificate, the CA's and each connected node's,
    expiry = "fedtre_certificate_expiry_timestamp_seconds"
    for (role, subject), timestamp in expected.items():
        assert value(samples, expiry, role=role, subject=subject) == timestamp, (role, subject)
    assert len([name for name, _ in samples if name == expiry]) == len(expected)
    # and no counter carries a _created series.
    assert not [name for name, _ in samples if name.endswith("_created")]
