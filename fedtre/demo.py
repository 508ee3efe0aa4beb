"""`fedtre demo`: a coordinator and three agents as separate processes, on synthetic data.

The governance is on, as in a real network: the first admin is bootstrapped with a
token; the admin creates a researcher and an approver (each with their own API token)
and a project naming the TREs, the dataset and the analyses it may use. The researcher
submits each analysis, the approver approves it, the coordinator signs the approved
tasks, the agents verify the signature, run the task on their own cohorts with the
default disclosure policy (threshold 10; counts carry the cell-key method's small,
consistent noise), and the combined result is printed with each TRE's outcome.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fedtre.client import Client, Result
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import Unavailable
from fedtre.files import open_private
from fedtre.identity.ca import init_network
from fedtre.report import result_lines
from fedtre.synth import COLUMN_TYPES, GRIDS, write_cohorts

NODES = 3
PROJECT = "demo"
START_TIMEOUT_S = 30.0
# (title, analysis, params) run in order; the thresholds are the TREs' defaults.
ANALYSES: tuple[tuple[str, str, dict], ...] = (
    (
        "Smokers aged 50 or over",
        "count",
        {
            "filter": {
                "and": [
                    {"col": "age", "op": ">=", "value": 50},
                    {"col": "smoking", "op": "==", "value": "current"},
                ]
            }
        },
    ),
    ("Smoking status by sex", "crosstab", {"rows": "smoking", "columns": "sex"}),
    ("Systolic blood pressure by diabetes status", "summary", {"column": "sbp", "by": "diabetes"}),
    # Fewer people are 60 or over: small cells are withheld at each TRE (with more cells, so
    # that none can be recovered from the totals), and so in the total.
    (
        "People aged 60 or over by deprivation and smoking",
        "crosstab",
        {
            "rows": "deprivation",
            "columns": "smoking",
            "filter": {"col": "age", "op": ">=", "value": 60},
        },
    ),
)


def run_demo(
    rows: int = 2000, say: Callable[[str], None] = print, keep: bool = False
) -> list[Result]:
    """Run the demo network end to end and return the three results."""
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="fedtre-demo-"))
    processes: list[subprocess.Popen] = []
    try:
        node_ids = [f"tre-{chr(ord('a') + i)}" for i in range(NODES)]
        say(f"network in {home}")
        init_network(home / "pki", node_ids)
        data = write_cohorts(home / "data", n_nodes=NODES, rows=rows, seed=2026, fmt="sqlite")
        say(f"synthetic cohorts: {NODES} TREs x {rows} people")

        database = ["--database-url", f"sqlite:///{home / 'coordinator.sqlite'}"]
        tls_dir = ["--tls-dir", str(home / "pki" / "coordinator")]
        run_cli(["coordinator", "bootstrap-admin", "admin", "--out", str(home / "people" / "admin"),
              *tls_dir, *database])  # fmt: skip
        coordinator = spawn(
            ["coordinator", "serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
             *tls_dir, *database],
            home / "coordinator.log",
        )  # fmt: skip
        processes.append(coordinator)
        address, api_address = read_addresses(coordinator, home / "coordinator.log")
        say(f"coordinator: agents on {address} (mutual TLS), people on {api_address} (TLS + token)")
        for node_id in node_ids:
            config = write_agent_config(home, node_id, address, data[node_id])
            processes.append(
                spawn(["agent", "run", "--config", str(config)], home / f"{node_id}.log")
            )

        with Client(api_address, home / "people" / "admin") as admin:
            # A project names only nodes and datasets the network has: agents first.
            wait_for_nodes(admin, node_ids, processes, home)
            say(f"agents online: {', '.join(node_ids)}")
            tokens = _set_up_governance(admin, node_ids, say)
        say(
            "disclosure control: default policy; counts below 10 withheld, every released "
            "count carries small consistent noise (at most +-3), so totals differ slightly "
            "from the exact ones\n"
        )

        ca = home / "pki" / "ca" / "ca.pem"
        results = []
        with (
            Client(api_address, token=tokens["researcher"], ca=ca) as researcher,
            Client(api_address, token=tokens["approver"], ca=ca) as approver,
        ):
            for title, analysis, params in ANALYSES:
                handle = researcher.submit(
                    analysis, dataset="cohort", params=params, project=PROJECT
                )
                approver.approve(handle.id)
                result = handle.result(timeout=30)
                results.append(result)
                _show(title, analysis, result, say)
        return results
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if keep:
            say(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        say(f"demo finished in {time.monotonic() - started:.1f} s; all processes stopped")


def _set_up_governance(
    admin: Client, node_ids: list[str], say: Callable[[str], None]
) -> dict[str, str]:
    """Create a researcher, an approver and the demo project; return their tokens."""
    tokens = {}
    for name, role in (("researcher", "researcher"), ("approver", "approver")):
        admin.admin.create_user(name, role)
        _, tokens[name] = admin.admin.issue_token(name, valid_days=1, description="demo")
    admin.admin.create_project(
        PROJECT,
        description="fedtre demo: smoking, blood pressure and deprivation",
        expires=datetime.now(UTC) + timedelta(days=1),
        nodes=node_ids,
        datasets=["cohort"],
        analyses=sorted({analysis for _, analysis, _ in ANALYSES}),
        members=["researcher"],
        approvals_required=1,
    )
    say(f"project {PROJECT!r}: researcher 'researcher', approver 'approver' (API tokens)")
    return tokens


def run_cli(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedtre.cli.main", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise Unavailable(f"`fedtre {' '.join(args[:2])}` failed: {done.stderr.strip()}")


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The child holds its own copy of the log's descriptor; ours closes with the block.
    with open_private(log) as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "fedtre.cli.main", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )


def read_addresses(process: subprocess.Popen, log: Path) -> tuple[str, str]:
    """Return the coordinator's (agents' mutual-TLS address, people's API address)."""
    assert process.stdout is not None
    found = []
    for pattern in (r"listening on (\S+)", r"API \(TLS, API tokens\) on (\S+)"):
        match = re.search(pattern, process.stdout.readline())
        if not match:
            raise Unavailable(
                f"the coordinator did not start; see {log}:\n{log.read_text()[-2000:]}"
            )
        found.append(match.group(1))
    return found[0], found[1]


def write_agent_config(
    home: Path,
    node_id: str,
    address: str,
    data: Path,
    analyses: Sequence[str] | None = None,
) -> Path:
    """Write home/<node>.toml: node_id's agent on the cohort table of the SQLite file data.

    analyses: the analyses it accepts (None: the agent's defaults).
    """
    from node_agent.config import (
        DEFAULT_ANALYSES,
        AgentConfig,
        DatasetConfig,
        TlsConfig,
        write_config,
    )

    bundle = home / "pki" / "nodes" / node_id
    path = home / f"{node_id}.toml"
    write_config(
        path,
        AgentConfig(
            node_id=node_id,
            coordinator=address,
            state_db=home / f"{node_id}-state.sqlite",
            tls=TlsConfig.from_bundle(bundle),
            datasets={
                "cohort": DatasetConfig(
                    name="cohort",
                    columns=dict(COLUMN_TYPES),
                    url=f"sqlite:///{data}",
                    table="cohort",
                    grids=dict(GRIDS),
                )
            },
            policy=DisclosurePolicy(),
            analyses=DEFAULT_ANALYSES if analyses is None else tuple(analyses),
        ),
    )
    return path


def wait_for_nodes(
    client: Client,
    node_ids: list[str],
    processes: list[subprocess.Popen],
    home: Path,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                logs = "\n".join(
                    f"{log.name}: {log.read_text().strip()[-500:]}"
                    for log in sorted(home.glob("*.log"))
                    if log.read_text().strip()
                )
                raise Unavailable(f"a demo process stopped early:\n{logs}")
        try:
            if {n.node_id for n in client.nodes() if n.online} >= set(node_ids):
                return
        except Unavailable:
            pass
        time.sleep(0.1)
    raise Unavailable(f"the agents did not connect within {timeout_s:.0f} s; see the logs")


# Said under every result: the figures are not the exact ones, by design.
NOISE_NOTE = (
    "(not exact: each TRE adds small consistent noise to every count it releases, at most "
    "+-3, and to sums and means; exact figures never leave a TRE)"
)


def _show(title: str, analysis: str, result: Result, say: Callable[[str], None]) -> None:
    say(f"== {title} ({analysis}, job {result.job.id}: {result.state})")
    for line in result_lines(result):
        say(line)
    say(NOISE_NOTE)
    say("")
