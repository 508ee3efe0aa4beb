"""Two coordinator replicas on one PostgreSQL schema; one is SIGKILLed under load.

Two real coordinators and three real agents run as processes on loopback. Each agent
lists both coordinators (tre-b the other way round, so both serve agents from the
start). Researchers submit jobs through both replicas' API ports; part-way through,
replica A is SIGKILLed. Its agents move to replica B; submissions that were going to A
are retried on B with the same idempotency key.

At the end every job must be completed, partial or failed with a reason (none lost,
none running), no node two tasks for one job, each task's result recorded once, each
agent must have released each output at most once (and exactly what the coordinator
recorded), and no task may have been dispatched by both replicas unless the first was
the killed one and the second dispatch came after the kill.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_fault_injection import (
    FINAL,
    NODES,
    PROJECT,
    WORKLOAD,
    Network,
    _read_ports,
    _spawn,
    _wait_final,
    agent_releases,
)

from fedtre.client import Client
from fedtre.errors import FedtreError, Unavailable

JOBS = 60
SUBMIT_S = 12.0  # the submissions' spread; replica A dies part-way
KILL_AFTER = 24  # jobs submitted before replica A is killed
DRAIN_S = 60.0


class _Address:
    """What Network expects of a proxy: an address (here: both replicas) and close()."""

    def __init__(self, address: str) -> None:
        self.address = address

    def close(self) -> None:
        pass


class Replicas(Network):
    """Network with two coordinators on one PostgreSQL schema and no proxies."""

    def __init__(self, home: Path, db_url: str) -> None:
        super().__init__(home)
        self.db_url = db_url
        self.doomed: Any = None
        self.pids: dict[str, int] = {}
        self.api_ports: dict[str, int] = {}

    def start_replicas(self) -> None:
        ports: dict[str, tuple[int, int]] = {}
        for name in ("A", "B"):
            log = self.logs / f"coordinator-{name}.log"
            process = _spawn(
                ["coordinator", "serve", "--listen", "127.0.0.1:0", "--api-listen",
                 "127.0.0.1:0", "--tls-dir", str(self.home / "pki" / "coordinator"),
                 "--database-url", self.db_url, "--ping-interval", "1", "--offline-after", "5",
                 "--tick-interval", "0.5", "--default-deadline", "40", "--log-level", "WARNING"],
                log,
            )  # fmt: skip
            ports[name] = _read_ports(process, log)
            self.pids[name] = process.pid
            self.api_ports[name] = ports[name][1]
            if name == "A":
                self.doomed = process
            else:
                self.coordinator = process  # the survivor: Network.stop() stops it
        a, b = (f"127.0.0.1:{ports[n][0]}" for n in ("A", "B"))
        # tre-b starts on B, the others on A: both replicas serve agents from the start.
        self.links = {
            node: _Address(f"{b},{a}" if node == "tre-b" else f"{a},{b}") for node in NODES
        }
        self.api = _Address(f"127.0.0.1:{self.api_ports['B']}")

    def kill_a(self) -> datetime:
        killed_at = datetime.now(UTC)
        self.doomed.kill()
        self.doomed.wait(timeout=10)
        return killed_at


def _submit_all(
    clients: dict[str, Client], jobs: dict[str, int], killed: threading.Event, errors: list[str]
) -> None:
    """Submit JOBS jobs alternately through A and B, at a steady pace; after a failure,
    retry the same request (same idempotency key) through the other replica."""
    for i in range(JOBS):
        analysis, params = WORKLOAD[i % len(WORKLOAD)]
        request_id = str(uuid.uuid4())
        order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
        if killed.is_set():
            order = ["B"]
        stop_at = time.monotonic() + 30
        attempt = 0
        while True:
            replica = order[attempt % len(order)]
            try:
                handle = clients[replica].submit(
                    analysis, dataset="cohort", params=params, project=PROJECT,
                    request_id=request_id,
                )  # fmt: skip
            except (Unavailable, FedtreError) as exc:
                if not isinstance(exc, Unavailable) and "cannot reach" not in str(exc):
                    errors.append(f"submission {i}: {type(exc).__name__}: {exc}")
                    return
                if time.monotonic() > stop_at:
                    errors.append(f"submission {i} never reached a coordinator")
                    return
                attempt += 1
                continue
            jobs[request_id] = handle.id
            break
        time.sleep(SUBMIT_S / JOBS)  # the load's pace, not a synchronisation


@pytest.mark.timeout(240)
def test_two_replicas_lose_nothing_and_dispatch_nothing_twice_when_one_is_killed(tmp_path, pg_url):
    started = time.monotonic()
    net = Replicas(tmp_path, pg_url)
    net.prepare()
    jobs: dict[str, int] = {}
    errors: list[str] = []
    killed = threading.Event()
    killed_at: datetime | None = None
    try:
        # Given: two replicas on one schema, three agents that list both
        net.start_replicas()
        for node in NODES:
            net.start_agent(node)
        net.wait_online()
        token = net.set_up_governance()  # a project names nodes that have registered
        ca = tmp_path / "pki" / "ca" / "ca.pem"
        clients = {
            name: Client(f"127.0.0.1:{port}", token=token, ca=ca, timeout=5)
            for name, port in net.api_ports.items()
        }
        try:
            # When: jobs are submitted through both, and A is killed part-way
            submitter = threading.Thread(target=_submit_all, args=(clients, jobs, killed, errors))
            submitter.start()
            deadline = time.monotonic() + 60
            while len(jobs) < KILL_AFTER and submitter.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            killed_at = net.kill_a()
            killed.set()
            submitter.join(timeout=90)
            assert not errors, errors[:5]
            assert len(jobs) == JOBS
            net.check_alive()
            states = _wait_final(clients["B"], set(jobs.values()), DRAIN_S)
        finally:
            for client in clients.values():
                client.close()
    finally:
        if net.doomed is not None and net.doomed.poll() is None:
            net.doomed.kill()
        exit_codes = net.stop()
    assert killed_at is not None

    # Then: read the coordinators' database and the agents' states
    from coordinator.store import audit_log

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, state, request_id, reason FROM jobs")).all()
        tasks = conn.execute(
            sa.text("SELECT task_id, job_id, node, round_no, state, outcome, payload FROM tasks")
        ).all()
        audit = list(audit_log.entries(conn))
    engine.dispose()
    submitted = set(jobs.values())
    by_id = {j.id: j for j in rows}
    lost = sorted(submitted - set(by_id))
    unfinished = [j.id for j in rows if j.state not in FINAL]
    unexplained = [j.id for j in rows if j.state == "failed" and not j.reason]
    duplicated_jobs = len(set(by_id) - submitted)
    per_node = collections.Counter((t.job_id, t.node, t.round_no) for t in tasks)
    duplicated_tasks = sum(n - 1 for n in per_node.values() if n > 1)
    reported = collections.Counter(
        e.subject for e in audit if e.event == "task.reported"
    )  # one per task: a result is recorded once
    reported_twice = sum(n - 1 for n in reported.values() if n > 1)

    # Dispatches per task, in the log's order, each with the replica that made it.
    names = {f"{pid}": name for name, pid in net.pids.items()}
    dispatches: dict[str, list[tuple[str, datetime]]] = collections.defaultdict(list)
    for e in audit:
        if e.event == "task.dispatched":
            replica = names.get(str(e.details.get("replica", "")).rsplit(":", 1)[-1], "?")
            dispatches[e.subject].append((replica, datetime.fromisoformat(e.at)))
    unknown_replica = sum(1 for d in dispatches.values() for r, _ in d if r == "?")
    dispatched_twice, taken_over = [], 0
    for subject, seen in dispatches.items():
        for (first, _), (then, at) in zip(seen, seen[1:], strict=False):
            if first == then:
                continue  # redelivered by the same replica after its agent reconnected
            if first == "A" and then == "B" and at >= killed_at:
                taken_over += 1  # A died with it delivered and unanswered
            else:
                dispatched_twice.append(subject)
    by_replica = collections.Counter(r for d in dispatches.values() for r, _ in d)

    releases = agent_releases(net, tasks, verify_chain=False)
    released_twice, unmatched, missing = releases.twice, releases.unmatched, releases.missing

    print(
        f"\ntwo replicas: {len(submitted)} jobs in {time.monotonic() - started:.0f} s; "
        f"replica A SIGKILLed after {KILL_AFTER} submissions; "
        f"job states {dict(collections.Counter(states.values()))}; "
        f"dispatches by replica {dict(by_replica)}; taken over from A after its death "
        f"{taken_over}; lost {len(lost) + len(unfinished)}, dispatched twice "
        f"{len(dispatched_twice)}, results recorded twice {reported_twice}, "
        f"released twice {released_twice}"
    )
    assert lost == [] and unfinished == [] and unexplained == []
    assert duplicated_jobs == 0 and duplicated_tasks == 0
    assert reported_twice == 0
    assert dispatched_twice == [] and unknown_replica == 0
    # Both replicas served agents, and the survivor went on with the work after the kill.
    assert by_replica["A"] > 0 and by_replica["B"] > 0
    assert any(at >= killed_at for d in dispatches.values() for r, at in d if r == "B")
    assert released_twice == 0
    assert unmatched == [] and missing == []
    assert set(by_id) == submitted
    assert exit_codes == {name: 0 for name in (*NODES, "coordinator")}
