"""Fault injection: a few hundred jobs while the coordinator and agents are killed and links cut.

A real coordinator and three real agents run as separate processes on loopback; each
agent reaches the coordinator through a TCP proxy this test runs, and people reach it
through another. While a researcher submits small count and crosstab jobs (each with an
idempotency key, retried until the coordinator answers), the test in turn

- SIGKILLs the coordinator and restarts it on the same database,
- SIGKILLs an agent and restarts it on the same state,
- cuts one agent's link, or every agent's, and restores it a moment later.

At the end every job must be completed, partial or failed with a reason (none lost,
none still running), no submission may have made two jobs, no node two tasks for one
job, and each agent must have released each output at most once, exactly what the
coordinator recorded.

Bounded: FEDTRE_FAULT_JOBS jobs (default 200) spread over FEDTRE_FAULT_SECONDS of
faults (default 60), then at most DRAIN_S for the network to settle.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fault_proxy import Proxy

from fedtre.client import Client
from fedtre.credentials import write_token_file
from fedtre.demo import write_agent_config
from fedtre.errors import FedtreError, Unavailable
from fedtre.identity.ca import init_network
from fedtre.synth import write_cohorts

JOBS = int(os.environ.get("FEDTRE_FAULT_JOBS", "200"))
FAULT_SECONDS = float(os.environ.get("FEDTRE_FAULT_SECONDS", "60"))
DRAIN_S = 90.0
START_S = 60.0
NODES = ("tre-a", "tre-b", "tre-c")
PROJECT = "faults"
# Each node has this long to answer: longer than any outage the test causes, so a
# timeout here would mean a task was lost, yet short enough to end the run.
DEADLINE_S = 40
WORKLOAD: tuple[tuple[str, dict[str, Any]], ...] = (
    ("count", {}),
    ("crosstab", {"rows": "sex", "columns": "smoking"}),
    ("count", {"filter": {"col": "age", "op": ">=", "value": 50}}),
    ("crosstab", {"rows": "smoking", "columns": "diabetes"}),
    # several rounds each: the coordinator is killed mid-round too
    ("glm", {"outcome": "diabetes", "family": "binomial", "covariates": ["age", "sex"]}),
)
ANALYSES = sorted({analysis for analysis, _ in WORKLOAD})
FINAL = {"completed", "partial", "failed"}
RELEASING = {"released", "suppressed"}


class Network:
    """The processes, their proxies and their files under home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.db_url = f"sqlite:///{home / 'coordinator.sqlite'}"
        self.coordinator: subprocess.Popen[str] | None = None
        self.agents: dict[str, subprocess.Popen[str]] = {}
        self.links: dict[str, Proxy] = {}
        self.api: Proxy | None = None
        self.logs = home / "logs"
        self.logs.mkdir()
        self.starts: collections.Counter[str] = collections.Counter()

    # -- set-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        init_network(self.home / "pki", list(NODES))
        self.data = write_cohorts(self.home / "data", n_nodes=3, rows=400, seed=7, fmt="sqlite")
        from coordinator.admin import Admin
        from coordinator.store.store import Store

        store = Store(self.db_url)
        try:
            _, _, token = Admin(store).bootstrap_admin("admin")
        finally:
            store.close()
        self.admin_dir = self.home / "people" / "admin"
        self.admin_dir.mkdir(parents=True)
        write_token_file(self.admin_dir / "token", token)
        shutil.copyfile(self.home / "pki" / "ca" / "ca.pem", self.admin_dir / "ca.pem")

    def start_coordinator(self) -> None:
        log = self.logs / f"coordinator-{self.starts['coordinator']}.log"
        self.starts["coordinator"] += 1
        self.coordinator = _spawn(
            ["coordinator", "serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
             "--tls-dir", str(self.home / "pki" / "coordinator"), "--database-url", self.db_url,
             "--ping-interval", "1", "--offline-after", "5", "--tick-interval", "0.5",
             "--default-deadline", str(DEADLINE_S), "--log-level", "WARNING"],
            log,
        )  # fmt: skip
        agent_port, api_port = _read_ports(self.coordinator, log)
        if self.api is None:
            self.api = Proxy(api_port).start()
            self.links = {node: Proxy(agent_port).start() for node in NODES}
        else:
            self.api.retarget(api_port)
            for link in self.links.values():
                link.retarget(agent_port)

    def kill_coordinator(self) -> None:
        assert self.coordinator is not None
        self.coordinator.send_signal(signal.SIGKILL)
        self.coordinator.wait(timeout=10)

    def start_agent(self, node: str) -> None:
        config = self._agent_config(node)
        log = self.logs / f"{node}-{self.starts[node]}.log"
        self.starts[node] += 1
        self.agents[node] = _spawn(
            ["agent", "run", "--config", str(config), "--log-level", "WARNING"], log
        )

    def kill_agent(self, node: str) -> None:
        self.agents[node].send_signal(signal.SIGKILL)
        self.agents[node].wait(timeout=10)

    def _agent_config(self, node: str) -> Path:
        path = self.home / f"{node}.toml"
        if path.exists():
            return path
        address = self.links[node].address
        return write_agent_config(self.home, node, address, self.data[node], ANALYSES)

    def state_db(self, node: str) -> Path:
        return self.home / f"{node}-state.sqlite"  # where write_agent_config puts it

    def admin_client(self) -> Client:
        assert self.api is not None
        return Client(self.api.address, self.admin_dir, timeout=5)

    def set_up_governance(self) -> str:
        """Create the researcher and an auto-approving project; return the researcher's token."""
        with self.admin_client() as admin:
            admin.admin.create_user("researcher", "researcher")
            _, token = admin.admin.issue_token("researcher", valid_days=1, description="faults")
            admin.admin.create_project(
                PROJECT,
                expires=datetime.now(UTC) + timedelta(days=1),
                nodes=list(NODES),
                datasets=["cohort"],
                analyses=ANALYSES,
                members=["researcher"],
                auto_approve=ANALYSES,
            )
        return str(token)

    def wait_online(self, timeout: float = START_S) -> None:
        deadline = time.monotonic() + timeout
        with self.admin_client() as admin:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    if {n.node_id for n in admin.nodes() if n.online} >= set(NODES):
                        return
                except Unavailable:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"the agents did not connect within {timeout} s; see {self.logs}")

    def check_alive(self) -> None:
        for name, process in (("coordinator", self.coordinator), *self.agents.items()):
            if process is not None and process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}; see {self.logs}")

    def stop(self) -> dict[str, int | None]:
        """Stop the agents, then the coordinator, gracefully (SIGTERM), then the proxies.

        Returns each process's exit code (None: it had to be killed).
        """
        codes: dict[str, int | None] = {}
        named = [*self.agents.items(), ("coordinator", self.coordinator)]
        processes = [process for _, process in named]
        for process in processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            if process is None:
                continue
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for name, process in named:
            if process is not None:
                codes[name] = process.returncode if process.returncode >= 0 else None
        for proxy in (*self.links.values(), self.api):
            if proxy is not None:
                proxy.close()
        return codes


def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fedtre.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=log.parent,
    )


def _read_ports(process: subprocess.Popen[str], log: Path) -> tuple[int, int]:
    """The coordinator's agent and API ports, from its first two lines (bounded wait)."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def read() -> None:
        for _ in range(2):
            lines.put(stdout.readline())

    threading.Thread(target=read, daemon=True).start()
    ports = []
    for pattern in (r"listening on \S+:(\d+)", r"API \(TLS, API tokens\) on \S+:(\d+)"):
        try:
            match = re.search(pattern, lines.get(timeout=START_S))
        except queue.Empty:
            match = None
        if not match:
            process.kill()
            raise AssertionError(f"the coordinator did not start:\n{log.read_text()[-3000:]}")
        ports.append(int(match.group(1)))
    return ports[0], ports[1]


class Submitter:
    """Submits the workload at a steady pace, each job under its own idempotency key."""

    def __init__(self, client: Client, total: int, seconds: float) -> None:
        self.client = client
        self.total = total
        self.interval = seconds / total
        self.jobs: dict[str, int] = {}  # request id -> job id
        self.retries = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def run(self, index: int, stride: int, stop_at: float) -> None:
        for i in range(index, self.total, stride):
            analysis, params = WORKLOAD[i % len(WORKLOAD)]
            request_id = str(uuid.uuid4())
            while True:
                if time.monotonic() > stop_at:
                    self.errors.append(f"submission {i} never reached the coordinator")
                    return
                try:
                    handle = self.client.submit(
                        analysis,
                        dataset="cohort",
                        params=params,
                        project=PROJECT,
                        request_id=request_id,
                    )
                except (Unavailable, FedtreError) as exc:
                    # A link cut or a coordinator restart mid-stream can also surface as a
                    # removed stream (TLS bytes cut off at the proxy): as transient.
                    transient = ("cannot reach", "Stream removed")
                    if not isinstance(exc, Unavailable) and not any(
                        t in str(exc) for t in transient
                    ):
                        self.errors.append(f"submission {i}: {type(exc).__name__}: {exc}")
                        return
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.2)
                    continue
                with self._lock:
                    self.jobs[request_id] = handle.id
                break
            time.sleep(self.interval * stride)


def inject_faults(net: Network, stop: threading.Event, rng: random.Random) -> collections.Counter:
    """Cycle through the kinds of fault until stop is set; return how many of each."""
    injected: collections.Counter[str] = collections.Counter()
    kinds = (
        "coordinator_sigkill",
        "link_cut_one",
        "agent_sigkill",
        "link_cut_all",
        "agent_sigkill",
        "link_cut_one",
    )
    i = 0
    while not stop.wait(rng.uniform(1.5, 3.0)):
        kind = kinds[i % len(kinds)]
        i += 1
        if kind == "coordinator_sigkill":
            net.kill_coordinator()
            net.start_coordinator()
        elif kind == "agent_sigkill":
            node = rng.choice(NODES)
            net.kill_agent(node)
            net.start_agent(node)
        else:
            links = list(net.links.values())
            cut = links if kind == "link_cut_all" else [rng.choice(links)]
            for link in cut:
                link.cut()
            stop.wait(rng.uniform(0.3, 1.5))
            for link in cut:
                link.restore()
        injected[kind] += 1
    return injected


def _plain(value: Any) -> Any:
    """value with every number a float: what crossed the wire as a protobuf Struct."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.timeout(420)
def test_no_job_is_lost_duplicated_or_released_twice_under_faults(tmp_path):
    started = time.monotonic()
    net = Network(tmp_path)
    net.prepare()
    rng = random.Random(2026)
    stop_faults = threading.Event()
    injected: collections.Counter[str] = collections.Counter()
    try:
        net.start_coordinator()
        for node in NODES:
            net.start_agent(node)
        net.wait_online()
        token = net.set_up_governance()  # a project names nodes that have registered
        ca = tmp_path / "pki" / "ca" / "ca.pem"
        assert net.api is not None

        # When: jobs are submitted while faults are injected.
        with Client(net.api.address, token=token, ca=ca, timeout=5) as researcher:
            submitter = Submitter(researcher, JOBS, FAULT_SECONDS)
            stop_at = time.monotonic() + FAULT_SECONDS + DRAIN_S
            workers = [
                threading.Thread(target=submitter.run, args=(k, 3, stop_at)) for k in range(3)
            ]
            faults: list[collections.Counter[str]] = []
            injector = threading.Thread(
                target=lambda: faults.append(inject_faults(net, stop_faults, rng))
            )
            injector.start()
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=FAULT_SECONDS + DRAIN_S + 30)
            stop_faults.set()
            injector.join(timeout=60)
            injected = faults[0] if faults else injected
            assert not submitter.errors, submitter.errors[:5]
            assert len(submitter.jobs) == JOBS

            # The network settles: every link up, every process running.
            for link in net.links.values():
                link.restore()
            net.check_alive()
            states = _wait_final(researcher, set(submitter.jobs.values()), DRAIN_S)
    finally:
        stop_faults.set()
        exit_codes = net.stop()

    # Then: read both sides' databases.
    engine = sa.create_engine(net.db_url)
    with engine.connect() as conn:
        jobs = conn.execute(
            sa.text("SELECT id, state, request_id, reason, analysis, round_no FROM jobs")
        ).all()
        tasks = conn.execute(
            sa.text(
                "SELECT task_id, job_id, node, round_no, state, outcome, payload, error, rules "
                "FROM tasks"
            )
        ).all()
    engine.dispose()
    submitted = set(submitter.jobs.values())
    by_id = {j.id: j for j in jobs}
    lost = [job_id for job_id in submitted if by_id.get(job_id) is None]
    unfinished = [j.id for j in jobs if j.state not in FINAL]
    per_request = collections.Counter(j.request_id for j in jobs)
    duplicated_jobs = sum(n - 1 for n in per_request.values() if n > 1) + len(
        set(by_id) - submitted
    )
    per_node = collections.Counter((t.job_id, t.node, t.round_no) for t in tasks)
    duplicated_tasks = sum(n - 1 for n in per_node.values() if n > 1)
    unexplained = [
        j.id
        for j in jobs
        if j.state != "completed"
        and not j.reason
        and not any(
            t.outcome not in RELEASING and (t.error or _json(t.rules))
            for t in tasks
            if t.job_id == j.id
        )
        and not any(t.outcome == "suppressed" for t in tasks if t.job_id == j.id)
    ]

    releases = agent_releases(net, tasks)
    released_twice, unmatched, missing = releases.twice, releases.unmatched, releases.missing
    released_by_agents = releases.released

    outcomes = collections.Counter(states.values())
    # Why nodes did not release: disclosure rules (expected) or faults (timeouts, give-ups).
    not_released = collections.Counter(
        (t.outcome, re.sub(r"'[^']*'|\d+", "_", t.error)[:80])
        for t in tasks
        if t.outcome not in RELEASING
    )
    print(
        f"\nfault injection: {len(submitted)} jobs in {time.monotonic() - started:.0f} s; "
        f"faults injected: {dict(sorted(injected.items()))} (total {sum(injected.values())}); "
        f"submission retries {submitter.retries}; job states {dict(sorted(outcomes.items()))}; "
        f"multi-round jobs {sum(1 for j in jobs if j.analysis == 'glm')} "
        f"({sum(j.round_no or 1 for j in jobs if j.analysis == 'glm')} rounds); "
        f"lost {len(lost) + len(unfinished)}, duplicated {duplicated_jobs + duplicated_tasks}, "
        f"released twice {released_twice}; outputs released {len(released_by_agents)}; "
        f"not released: {dict(not_released)}"
    )
    assert sum(injected.values()) >= 6 and injected["coordinator_sigkill"] >= 1
    assert lost == [] and unfinished == []
    assert duplicated_jobs == 0 and duplicated_tasks == 0
    assert released_twice == 0
    assert unmatched == [] and missing == []
    assert unexplained == []
    assert set(by_id) == submitted
    # Graceful shutdown: SIGTERM drained every process and it exited cleanly.
    assert exit_codes == {name: 0 for name in (*NODES, "coordinator")}


def _wait_final(client: Client, job_ids: set[int], timeout: float) -> dict[int, str]:
    """Poll until every job has finished (or timeout); return each job's state."""
    deadline = time.monotonic() + timeout
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        try:
            listed = client.jobs(limit=1000, project=PROJECT)
        except FedtreError:
            # The researcher's connection may still carry bytes the faults corrupted
            # ("Stream removed", TSI_DATA_CORRUPTED) or be reconnecting: ask again.
            time.sleep(0.5)
            continue
        states = {j.id: j.state for j in listed if j.id in job_ids}
        if len(states) == len(job_ids) and all(s in FINAL for s in states.values()):
            return states
        time.sleep(0.5)
    return states


@dataclasses.dataclass
class AgentReleases:
    """What the agents' own state and audit logs say they released."""

    released: set[str]  # task ids released by some agent
    twice: int  # releases beyond the first of a task, in state rows or audit entries
    unmatched: list[str]  # released payload differs from what the coordinator recorded
    missing: list[str]  # recorded by the coordinator as released, released by no agent


def agent_releases(net: Any, tasks: list[Any], *, verify_chain: bool = True) -> AgentReleases:
    """Compare every agent's releases with the coordinator's recorded outputs."""
    from node_agent import audit as agent_audit

    twice, unmatched = 0, []
    recorded = {
        t.task_id: _json(t.payload) for t in tasks if t.outcome in RELEASING and t.state == "done"
    }
    released: set[str] = set()
    for node in NODES:
        agent = sa.create_engine(f"sqlite:///{net.state_db(node)}")
        with agent.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT r.task_id, t.payload FROM releases r JOIN tasks t USING (task_id)")
            ).all()
        events = collections.Counter(
            e.subject for e in agent_audit.entries(agent) if e.event == "output.released"
        )
        if verify_chain:
            assert agent_audit.verify(agent).ok, f"{node}: its audit chain does not verify"
        agent.dispose()
        twice += sum(n - 1 for n in collections.Counter(r.task_id for r in rows).values())
        twice += sum(n - 1 for n in events.values() if n > 1)
        for r in rows:
            released.add(r.task_id)
            if r.task_id in recorded and _plain(recorded[r.task_id]) != _plain(_json(r.payload)):
                unmatched.append(r.task_id)
    # Whatever the coordinator recorded as released did leave an agent, exactly so.
    return AgentReleases(released, twice, unmatched, sorted(set(recorded) - released))
