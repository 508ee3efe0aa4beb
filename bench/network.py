"""Network benchmarks: job latency, throughput, fan-out to many agents, and how cost grows.

    .venv/bin/python bench/network.py all            # everything (several minutes)
    .venv/bin/python bench/network.py latency --jobs 200 [--threads]
    .venv/bin/python bench/network.py throughput --jobs 2000 [--database-url URL] [--clients 8]
    .venv/bin/python bench/network.py fanout --agents 200,500,1000
    .venv/bin/python bench/network.py rows --rows 2000,20000,200000

Prints a table per benchmark and writes bench/results/network.json. With
FEDTRE_BENCH_PROFILE=FILE, py-spy samples what is measured into FILE (raw format): the
coordinator's process (or, with --threads, this process, which then holds the whole
network). Everything is real: gRPC over TLS on loopback, SQLite (or the PostgreSQL given)
for the coordinator's state.

- latency and rows: a coordinator and three real agents, one job at a time, submit to
  combined result; each agent serves its own SQLite file of synthetic cohort data
  (fedtre.synth, 2,000 rows unless rows says otherwise), with the default disclosure
  policy; the project "default" approves count and summary automatically;
- throughput: the same network, jobs submitted from several client threads at once
  (--clients), timed until no job is running or waiting for approval (read from the
  coordinator's database without locking it);
- fanout: the coordinator as its own process (so its memory can be read from /proc),
  and light agents in a few worker processes: each holds a real node certificate, opens
  the real task stream over mutual TLS, and answers each task with a fixed released
  count, as an agent would after its checks. What is measured is the coordinator.

The network of latency, throughput and rows runs as deployed by default (--processes):
the coordinator and each agent are separate OS processes started through the real CLI
(`fedtre coordinator bootstrap-admin` / `coordinator serve`, `fedtre agent run` with a
config file written as `fedtre demo` writes it), and the clients are in this process.
--threads runs the same network as fedtre.testing.LocalNetwork instead: the coordinator
and the agents as threads of this process, sharing its GIL (results under
"<bench>_threads" in the JSON). Every process started is stopped at the end, on error too."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "network.json"
COUNT_PARAMS = {"filter": {"col": "age", "op": ">=", "value": 50}}


# -- helpers ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}"


def show(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        print(f"  {key:28} {value}")


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL at url, dropped afterwards; yields a URL using it."""
    import sqlalchemy as sa

    schema = f"fedtre_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        admin.dispose()


@dataclass(frozen=True)
class Network:
    """A running network of a coordinator and three agents, as the benchmarks use it."""

    client: Callable[[], Any]  # a new researcher's Client on the coordinator's API
    database_url: str  # the coordinator's database
    pid: int  # the process to profile: the coordinator's (this one with --threads)


@contextmanager
def network(rows: int, database_url: str | None, processes: bool) -> Iterator[Network]:
    """Three agents on rows-row synthetic cohorts (SQLite), and their coordinator."""
    from fedtre.synth import write_cohorts
    from fedtre.testing import LocalNetwork

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        files = write_cohorts(home / "data", n_nodes=3, rows=rows, seed=1, fmt="sqlite")
        if processes:
            with process_network(home, files, database_url) as net:
                yield net
            return
        data = {node: {"cohort": path} for node, path in files.items()}
        with LocalNetwork(data, database_url=database_url) as local:
            url = database_url or f"sqlite:///{local.directory / 'coordinator.sqlite'}"
            yield Network(local.client, url, os.getpid())


@contextmanager
def process_network(
    home: Path, files: dict[str, Path], database_url: str | None
) -> Iterator[Network]:
    """The coordinator and one agent per file as processes of the CLI, as `fedtre demo` runs them."""
    from fedtre.client import Client
    from fedtre.demo import spawn, wait_for_nodes, write_agent_config
    from fedtre.identity.ca import init_network

    nodes = list(files)
    init_network(home / "pki", nodes)
    url = database_url or f"sqlite:///{home / 'coordinator.sqlite'}"
    with coordinator_process(home, url) as (coordinator, address, api):
        agents: list[subprocess.Popen] = []
        try:
            for node in nodes:
                config = write_agent_config(home, node, address, files[node])
                agents.append(
                    spawn(
                        ["agent", "run", "--config", str(config), "--log-level", "WARNING"],
                        home / f"{node}.log",
                    )
                )
            with Client(api, home / "admin") as admin:
                token = set_up_project(admin, "default", nodes, ["count", "summary"])
                wait_for_nodes(admin, nodes, [coordinator, *agents], home)
            ca = home / "pki" / "ca" / "ca.pem"
            yield Network(lambda: Client(api, token=token, ca=ca), url, coordinator.pid)
        finally:
            stop(agents)


@contextmanager
def coordinator_process(
    home: Path, database_url: str
) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """`fedtre coordinator serve` on loopback with the first admin's identity in home/admin.

    Yields (process, agents' address, people's API address); stops it afterwards. The
    network's PKI must be in home/pki (fedtre.identity.ca.init_network).
    """
    from fedtre.demo import read_addresses, run_cli, spawn

    database = ["--database-url", database_url]
    tls = ["--tls-dir", str(home / "pki" / "coordinator")]
    run_cli(["coordinator", "bootstrap-admin", "admin", "--out", str(home / "admin"),
          *tls, *database])  # fmt: skip
    log = home / "coordinator.log"
    coordinator = spawn(
        ["coordinator", "serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
         "--log-level", "WARNING", *tls, *database],
        log,
    )  # fmt: skip
    try:
        address, api = read_addresses(coordinator, log)
        yield coordinator, address, api
    finally:
        stop([coordinator])


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after 10 s)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def set_up_project(
    admin: Any, project: str, nodes: list[str], analyses: list[str], wait_s: float = 120
) -> str:
    """A researcher with a token, member of project, which approves analyses automatically.

    wait_s: how long the agents may take to register (a large file's extract is built first).
    Returns the researcher's token.
    """
    admin.admin.create_user("researcher", "researcher")
    _, token = admin.admin.issue_token("researcher", valid_days=1)
    # A project names only nodes that have registered: wait for their agents.
    deadline = time.monotonic() + wait_s
    while not set(nodes) <= {n.node_id for n in admin.nodes()}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agents {nodes} did not register within {wait_s:.0f} s")
        time.sleep(0.2)
    admin.admin.create_project(
        project,
        expires=datetime.now(UTC) + timedelta(days=1),
        nodes=nodes,
        datasets=["cohort"],
        analyses=analyses,
        members=["researcher"],
        auto_approve=analyses,
    )
    return str(token)


def timed_jobs(client: Any, jobs: int, analysis: str, params: dict) -> list[float]:
    for _ in range(10):  # warm up connections and caches
        client.submit(analysis, dataset="cohort", params=params).result(timeout=60)
    latencies = []
    for _ in range(jobs):
        start = time.perf_counter()
        result = client.submit(analysis, dataset="cohort", params=params).result(timeout=60)
        latencies.append((time.perf_counter() - start) * 1000)
        assert result.state == "completed", result.state
    return latencies


# -- latency, rows, throughput -----------------------------------------------------------


def bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    with network(2000, args.database_url, args.processes) as net, net.client() as client:
        timed_jobs(client, 0, "count", COUNT_PARAMS)  # the warm-up, outside any profile
        with profiled(net.pid):
            latencies = timed_jobs(client, args.jobs, "count", COUNT_PARAMS)
        steps = job_steps(net.database_url, args.jobs)
    figures = {
        "network": _mode(args),
        "jobs": args.jobs,
        "database": "postgresql" if args.database_url else "sqlite",
        "p50_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        **steps,
    }
    show("latency: one count job over 3 agents, submit -> combined result", figures)
    return figures


def job_steps(database_url: str, jobs: int) -> dict[str, float]:
    """Where the last `jobs` jobs' time went, by the coordinator's own timestamps (p50 ms).

    created -> queued: submission and approval; queued -> last delivered: dispatch to the
    three streams; an agent's task: delivered -> reported (task receipt, checks,
    computation, disclosure control, report); last report -> completed: combining.
    """
    import sqlalchemy as sa

    from coordinator.store.schema import JobRow, TaskRow

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(JobRow.id))).scalar_one()
            rows = conn.execute(
                sa.select(JobRow.id, JobRow.created_at, JobRow.updated_at, TaskRow.queued_at,
                          TaskRow.delivered_at, TaskRow.reported_at)
                .join(TaskRow, TaskRow.job_id == JobRow.id)
                .where(JobRow.id > newest - jobs)
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    by_job: dict[int, list[Any]] = {}
    for row in rows:
        by_job.setdefault(row.id, []).append(row)

    def ms(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds() * 1000

    steps: dict[str, list[float]] = {
        "created_to_queued_ms": [], "queued_to_delivered_ms": [], "agent_task_ms": [],
        "last_report_to_completed_ms": [],
    }  # fmt: skip
    for tasks in by_job.values():
        job = tasks[0]
        steps["created_to_queued_ms"].append(ms(job.created_at, min(t.queued_at for t in tasks)))
        steps["queued_to_delivered_ms"].append(
            ms(min(t.queued_at for t in tasks), max(t.delivered_at for t in tasks))
        )
        steps["agent_task_ms"].extend(ms(t.delivered_at, t.reported_at) for t in tasks)
        steps["last_report_to_completed_ms"].append(
            ms(max(t.reported_at for t in tasks), job.updated_at)
        )
    return {name: round(statistics.median(values), 1) for name, values in steps.items()}


def _mode(args: argparse.Namespace) -> str:
    return "processes" if args.processes else "threads (one process)"


def bench_rows(args: argparse.Namespace) -> dict[str, Any]:
    curve = {}
    for rows in [int(r) for r in args.rows.split(",")]:
        with network(rows, args.database_url, args.processes) as net, net.client() as client:
            count = timed_jobs(client, 30, "count", COUNT_PARAMS)
            summary = timed_jobs(client, 30, "summary", {"column": "sbp", "by": "smoking"})
        curve[rows] = {
            "count_p50_ms": round(statistics.median(count), 2),
            "summary_p50_ms": round(statistics.median(summary), 2),
        }
        show(f"rows per node {rows}", curve[rows])
    return {"network": _mode(args), "rows_per_node": curve}


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    figures = {}
    targets = [("sqlite", None)]
    if args.database_url or args.postgres:
        targets.append(("postgresql", args.database_url or args.postgres))
    for name, url in targets:
        with postgres_schema(url) if url else _none() as schema_url:
            figures[name] = {
                "network": _mode(args),
                **_throughput(args.jobs, args.clients, schema_url, args.processes),
            }
        show(f"throughput on {name}: {args.jobs} count jobs over 3 agents", figures[name])
    return figures


@contextmanager
def _none() -> Iterator[None]:
    yield None


def _throughput(
    jobs: int, threads: int, database_url: str | None, processes: bool
) -> dict[str, Any]:
    import sqlalchemy as sa

    from coordinator.domain.model import JobState
    from coordinator.store.schema import JobRow

    with network(2000, database_url, processes) as net:
        clients = [net.client() for _ in range(threads)]
        timed_jobs(clients[0], 0, "count", COUNT_PARAMS)
        ids: list[int] = []
        lock = threading.Lock()

        def submit(client: Any, n: int) -> None:
            for _ in range(n):
                handle = client.submit("count", dataset="cohort", params=COUNT_PARAMS)
                with lock:
                    ids.append(handle.id)

        # A plain engine, not the coordinator's Store: its transactions take SQLite's write
        # lock (BEGIN IMMEDIATE), and this poll must not compete with the work measured.
        # A plain SELECT reads a snapshot of the WAL without blocking any writer.
        database = sa.create_engine(net.database_url)
        unfinished = (
            sa.select(JobRow.id)
            .where(JobRow.state.in_([JobState.RUNNING, JobState.PENDING_APPROVAL]))
            .limit(1)
        )
        share = [jobs // threads + (1 if i < jobs % threads else 0) for i in range(threads)]
        try:
            with profiled(net.pid):
                start = time.perf_counter()
                workers = [
                    threading.Thread(target=submit, args=(c, n))
                    for c, n in zip(clients, share, strict=True)
                ]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                submitted = time.perf_counter() - start
                while True:
                    with database.connect() as conn:
                        if conn.execute(unfinished).first() is None:
                            break
                    time.sleep(0.05)
                elapsed = time.perf_counter() - start
            with database.connect() as conn:
                completed = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(JobRow)
                    .where(JobRow.id.in_(ids), JobRow.state == JobState.COMPLETED)
                ).scalar_one()
        finally:
            database.dispose()
            for client in clients:
                client.close()
    return {
        "jobs": jobs,
        "client_threads": threads,
        "completed": completed,
        "submit_seconds": round(submitted, 2),
        "total_seconds": round(elapsed, 2),
        "jobs_per_second": round(jobs / elapsed, 1),
    }


# -- fan-out -------------------------------------------------------------------------------


def bench_fanout(args: argparse.Namespace) -> dict[str, Any]:
    curve = {}
    for agents in [int(a) for a in args.agents.split(",")]:
        curve[agents] = _fanout(agents, args.workers)
        show(f"fan-out: one count job to {agents} light agents", curve[agents])
    return {"agents": curve}


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, "no VmRSS in /proc (Linux only)"
    return int(match.group(1))


def _fanout(agents: int, workers: int) -> dict[str, Any]:
    from fedtre.client import Client
    from fedtre.identity.ca import init_network

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        nodes = [f"n{i:04d}" for i in range(agents)]
        started = time.perf_counter()
        init_network(home / "pki", nodes)
        pki_seconds = time.perf_counter() - started
        url = f"sqlite:///{home / 'coordinator.sqlite'}"
        pool: list[multiprocessing.Process] = []
        with coordinator_process(home, url) as (coordinator, address, api):
            try:
                admin = Client(api, home / "admin")
                time.sleep(1.0)  # let the coordinator settle before the baseline
                idle_kb = _rss_kb(coordinator.pid)
                started = time.perf_counter()
                slices = [nodes[i::workers] for i in range(workers)]
                for part in slices:
                    process = multiprocessing.Process(
                        target=_light_agents, args=(address, str(home / "pki" / "nodes"), part)
                    )
                    process.start()
                    pool.append(process)
                _wait_online(admin, agents)
                connect_seconds = time.perf_counter() - started
                # A project names only nodes that have registered: now they have.
                token = set_up_project(admin, "fanout", nodes, ["count"])
                time.sleep(2.0)  # idle, as the target says
                connected_kb = _rss_kb(coordinator.pid)
                researcher = Client(api, token=token, ca=home / "pki" / "ca" / "ca.pem")
                spy = _profile(coordinator.pid)
                started = time.perf_counter()
                handle = researcher.submit("count", dataset="cohort", params={}, project="fanout")
                result = handle.result(timeout=120)
                answered = time.perf_counter() - started
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                    spy.wait(timeout=60)
                assert result.state == "completed", result.state
                assert int(result.combined["n"]) == 100 * agents
                researcher.close()
                admin.close()
            finally:
                for process in pool:
                    process.terminate()
                for process in pool:
                    process.join(timeout=10)
    return {
        "issue_certificates_s": round(pki_seconds, 1),
        "all_connected_s": round(connect_seconds, 1),
        "job_to_last_result_s": round(answered, 2),
        "coordinator_rss_idle_mb": round(idle_kb / 1024, 1),
        "coordinator_rss_connected_mb": round(connected_kb / 1024, 1),
        "kb_per_connected_agent": round((connected_kb - idle_kb) / agents, 1),
    }


@contextmanager
def profiled(pid: int) -> Iterator[None]:
    """With FEDTRE_BENCH_PROFILE=FILE, sample process pid with py-spy into FILE meanwhile."""
    spy = _profile(pid)
    try:
        yield
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            spy.wait(timeout=60)


def _profile(pid: int) -> subprocess.Popen | None:
    """With FEDTRE_BENCH_PROFILE=FILE, sample the coordinator with py-spy into FILE."""
    target = os.environ.get("FEDTRE_BENCH_PROFILE")
    if not target:
        return None
    spy = subprocess.Popen(
        [shutil.which("py-spy", path=Path(sys.executable).parent) or "py-spy", "record", "--format", "raw", "--rate", "200", "-o", target,
         "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # let it attach
    return spy


def _wait_online(admin: Any, agents: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(n.online for n in admin.nodes()) >= agents:
            return
        time.sleep(0.5)
    raise SystemExit(f"only {sum(n.online for n in admin.nodes())} of {agents} agents connected")


def _light_agents(address: str, bundles: str, nodes: list[str]) -> None:
    """A worker process: one real mutual-TLS task stream per node, answering every task."""
    asyncio.run(_run_light_agents(address, Path(bundles), nodes))


async def _run_light_agents(address: str, bundles: Path, nodes: list[str]) -> None:
    await asyncio.gather(*(_light_agent(address, bundles / node) for node in nodes))


async def _light_agent(address: str, bundle: Path) -> None:
    import grpc

    from fedtre.identity.tls import TlsFiles, channel_credentials
    from fedtre.v1 import agent_pb2, agent_pb2_grpc, common_pb2
    from fedtre.wire import dict_to_struct

    credentials = channel_credentials(TlsFiles.from_dir(bundle))
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        dataset = common_pb2.DatasetSpec(
            name="cohort", columns=[common_pb2.ColumnSpec(name="age", type="integer")]
        )
        request = agent_pb2.OpenTaskStreamRequest(
            agent_version="bench", datasets=[dataset], analyses=["count"]
        )
        async for message in stub.OpenTaskStream(request):
            if message.WhichOneof("body") != "task":
                continue
            await stub.ReportResult(
                agent_pb2.ReportResultRequest(
                    task_id=message.task.task_id,
                    outcome=common_pb2.OUTCOME_RELEASED,
                    payload=dict_to_struct({"n": 100}),
                )
            )


# -- main --------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "latency": bench_latency,
    "throughput": bench_throughput,
    "fanout": bench_fanout,
    "rows": bench_rows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=[*BENCHES, "all"])
    parser.add_argument("--jobs", type=int, help="latency: 200; throughput: 2000")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--processes",
        action="store_true",
        default=True,
        help="latency, throughput, rows: the coordinator and each agent as its own process "
        "(the default)",
    )
    mode.add_argument(
        "--threads",
        dest="processes",
        action="store_false",
        help="latency, throughput, rows: the whole network in this process (LocalNetwork)",
    )
    parser.add_argument("--clients", type=int, default=8, help="throughput: client threads")
    parser.add_argument("--database-url", help="the coordinator's database (default SQLite)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "FEDTRE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="throughput also runs on this PostgreSQL, in a schema of its own ('' skips it)",
    )
    parser.add_argument("--agents", default="200,500,1000", help="fanout: agent counts")
    parser.add_argument("--workers", type=int, default=4, help="fanout: agent processes")
    parser.add_argument("--rows", default="2000,20000,200000", help="rows: rows per node")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    chosen = list(BENCHES) if args.bench == "all" else [args.bench]
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = machine()
    for name in chosen:
        if args.jobs is None:
            args.jobs = 2000 if name == "throughput" else 200
        key = name if args.processes or name == "fanout" else f"{name}_threads"
        results[key] = BENCHES[name](args)
        args.jobs = None if args.bench == "all" else args.jobs
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
