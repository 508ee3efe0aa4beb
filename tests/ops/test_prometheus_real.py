"""Debian's real Prometheus and promtool against a running network and the deploy files."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from ops_testkit import DATA, http_get, require_tool, wait_for

from fedtre.testing import LocalNetwork

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def network():
    """A metrics-enabled network that has answered two counts."""
    with LocalNetwork(DATA, metrics=True) as net:
        client = net.client()
        for _ in range(2):
            client.submit("count", dataset="cohort").result(timeout=20)
        yield net


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("promtool"), *args], input=stdin, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("process", ["coordinator", "tre-a"])
def test_exposition_passes_promtool_check_metrics(network, process):
    agent = network.agents.get(process)
    port = agent.metrics_port if agent else network.coordinator.metrics_port
    status, body = http_get(port, "/metrics")
    assert status == 200

    checked = _promtool("check", "metrics", stdin=body.encode())

    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == ""  # no lint findings either


def test_alert_rules_pass_promtool_check_rules():
    checked = _promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))

    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_scrape_config_passes_promtool_check_config():
    checked = _promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))

    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_alerts_fire_when_they_should_and_only_then():
    checked = _promtool("test", "rules", str(Path(__file__).with_name("alerts_test.yml")))

    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, promql: str) -> list[dict]:
    url = f"/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        status, body = http_get(port, url)
    except OSError:  # not listening yet
        return []
    if status != 200:
        return []
    return json.loads(body)["data"]["result"]


def test_real_prometheus_scrapes_coordinator_and_agents(network, tmp_path):
    binary = require_tool("prometheus")
    coordinator = f"127.0.0.1:{network.coordinator.metrics_port}"
    agents = [f"127.0.0.1:{a.metrics_port}" for a in network.agents.values()]
    # Given a scrape config like deploy/prometheus/prometheus.yml, pointing at this network,
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "fedtre-coordinator",
                        "static_configs": [{"targets": [coordinator]}],
                    },
                    {"job_name": "fedtre-agent", "static_configs": [{"targets": agents}]},
                ],
            }
        )
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    # when Prometheus runs against it,
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    try:

        def scraped() -> list[dict]:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
            up = _query(port, 'up{job=~"fedtre-.*"} == 1')
            return up if len(up) == 1 + len(agents) else []

        # then it scrapes every process (bounded wait: the first scrape is within 1 s),
        wait_for(scraped, timeout=30, what="Prometheus to scrape all four targets")
        # and answers queries over what the network did: two jobs, each on three nodes.
        submitted = _query(port, "sum(fedtre_jobs_submitted_total)")
        assert float(submitted[0]["value"][1]) == 2
        ran = _query(port, 'sum(fedtre_agent_tasks_total{job="fedtre-agent"})')
        assert float(ran[0]["value"][1]) == 2 * len(agents)
        online = _query(port, "sum(fedtre_node_online)")
        assert float(online[0]["value"][1]) == len(DATA)
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()
