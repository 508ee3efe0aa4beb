"""deploy/: images, compose demo, Kubernetes manifests and Grafana dashboard, checked as files.

There is no container engine in the test environment, so nothing is built or started:
the files are parsed, cross-checked against each other and against a running network's
metrics, and the demo's init script runs for real with its volumes mapped to folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from ops_testkit import DATA, http_get

from fedtre.identity.peer import identity_from_pem
from fedtre.testing import LocalNetwork, eventually
from node_agent.app import Agent
from node_agent.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NODES = ("tre-a", "tre-b", "tre-c")
METRICS_PORT = 9464
FEDTRE_UID = 10001


def _yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    docs = []
    for folder in ("coordinator", "agent"):
        kustomization = yaml.safe_load(
            (DEPLOY / "kubernetes" / folder / "kustomization.yaml").read_text()
        )
        for resource in kustomization["resources"]:
            docs += _yaml_docs(DEPLOY / "kubernetes" / folder / resource)
    return docs


@pytest.fixture(scope="module")
def exposed_samples() -> set[str]:
    """Every sample name a coordinator and an agent expose after some work."""
    with LocalNetwork(DATA, metrics=True) as net:
        client = net.client()
        client.submit("count", dataset="cohort").result(timeout=20)
        ports = [net.coordinator.metrics_port, net.agents["tre-a"].metrics_port]
        bodies = [http_get(port, "/metrics")[1] for port in ports]
    return {
        line.split("{")[0].split(" ")[0]
        for body in bodies
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


# -- images ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile.coordinator", "Dockerfile.agent"])
def test_dockerfile_is_slim_non_root_and_installs_the_package(name):
    text = (DEPLOY / name).read_text()
    instructions = [
        line.split(None, 1)
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line and not line.startswith("#")
    ]
    bases = [args for op, args in instructions if op == "FROM"]
    users = [args.strip() for op, args in instructions if op == "USER"]

    assert all(base.startswith("python:3.11-slim") for base in bases)
    assert users and users[-1].split(":")[0] == str(FEDTRE_UID)  # the image runs as non-root
    assert f"useradd --system --uid {FEDTRE_UID}" in text
    assert '".[postgres]"' in text  # the package, with the PostgreSQL driver
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
    assert "pki" not in text and ".pem" not in text  # no keys baked into an image
    assert str(METRICS_PORT) in " ".join(args for op, args in instructions if op == "EXPOSE")


def test_docker_context_leaves_out_local_state():
    ignored = (ROOT / ".dockerignore").read_text().split()

    assert {".venv", ".git", "tests"} <= set(ignored)


# -- compose --------------------------------------------------------------------------


def test_compose_runs_the_demo_network(compose):
    services = compose["services"]

    assert {"coordinator", *NODES, "postgres", "prometheus", "grafana"} <= set(services)
    assert services["coordinator"]["image"] == "fedtre-coordinator:dev"
    assert services["coordinator"]["build"]["dockerfile"] == "deploy/Dockerfile.coordinator"
    for node in NODES:
        assert services[node]["image"] == "fedtre-agent:dev"
        assert services[node]["build"]["dockerfile"] == "deploy/Dockerfile.agent"
    for service in services.values():
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        assert ":" in service["image"] and not service["image"].endswith(":latest")


def test_compose_services_run_as_non_root(compose):
    for name, service in compose["services"].items():
        uid = int(str(service["user"]).split(":")[0])
        if name == "volumes":
            # The one root step hands fresh volumes to uid 10001 and can do nothing else.
            assert service["entrypoint"][0] == "chown"
            assert service["cap_drop"] == ["ALL"] and service["cap_add"] == ["CHOWN"]
            assert service["network_mode"] == "none"
        else:
            assert uid != 0, f"{name} runs as root"
    for name in ("coordinator", *NODES, "init", "cli"):
        assert int(compose["services"][name]["user"].split(":")[0]) == FEDTRE_UID


def test_compose_publishes_ports_on_loopback_only(compose):
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}

    assert "127.0.0.1:50051:50051" in published["coordinator"]  # agents, mutual TLS
    assert "127.0.0.1:50052:50052" in published["coordinator"]  # people, API tokens
    assert f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}" in published["coordinator"]
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)
    assert all(not published[node] for node in NODES)  # agents dial out; nothing dials in


def test_compose_volumes_exist_and_each_agent_sees_only_its_own(compose):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} mounts undeclared volume {source}"
    for node in NODES:
        mounts = compose["services"][node]["volumes"]
        assert mounts == [
            f"./compose/agents/{node}.toml:/etc/fedtre/agent.toml:ro",
            f"{node}:/var/lib/fedtre",
        ]
    coordinator = compose["services"]["coordinator"]
    assert "ca:/ca" not in " ".join(coordinator["volumes"])  # the CA key stays in the init step
    env = coordinator["environment"]
    assert env["FEDTRE_METRICS_LISTEN"] == f"0.0.0.0:{METRICS_PORT}"
    assert env["FEDTRE_DATABASE_URL_FILE"].startswith("/secrets/")
    assert "FEDTRE_DATABASE_URL" not in env


def test_prometheus_scrapes_every_compose_service_on_its_metrics_port(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }

    assert targets == {
        "fedtre-coordinator": [f"coordinator:{METRICS_PORT}"],
        "fedtre-agent": [f"{node}:{METRICS_PORT}" for node in NODES],
    }
    mounts = " ".join(compose["services"]["prometheus"]["volumes"])
    assert "./prometheus/prometheus.yml:" in mounts and "./prometheus/alerts.yml:" in mounts
    assert config["rule_files"] == ["alerts.yml"]


@pytest.fixture(scope="module")
def demo_volumes(tmp_path_factory) -> Path:
    """The compose init script, run for real with its volume paths mapped to a folder."""
    root = tmp_path_factory.mktemp("volumes")
    script = (DEPLOY / "compose" / "init.sh").read_text()
    script = re.sub(r"(?<![\w./-])/(ca|out|tmp/synth)\b", lambda m: f"{root}/{m.group(1)}", script)
    for volume in (
        "ca",
        "out/coordinator",
        "out/users",
        "out/secrets",
        *(f"out/{n}" for n in NODES),
    ):
        (root / volume).mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for _ in range(2):  # a second run changes nothing and succeeds
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    return root


def test_compose_init_gives_each_party_only_its_own_files(demo_volumes):
    out = demo_volumes / "out"

    assert not list(out.rglob("ca.key"))  # the CA key is only in the ca volume
    assert (demo_volumes / "ca" / "ca" / "ca.key").is_file()
    coordinator = (out / "coordinator" / "cert.pem").read_bytes()
    names = x509.load_pem_x509_certificate(coordinator).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "coordinator" in names.value.get_values_for_type(x509.DNSName)
    for node in NODES:
        identity = identity_from_pem((out / node / "tls" / "cert.pem").read_bytes())
        assert (identity.role, identity.name) == ("node", node)
        assert stat.S_IMODE((out / node / "tls" / "key.pem").stat().st_mode) == 0o600
        assert (out / node / "data" / "cohort.sqlite").is_file()
        # each agent pins the public job-verification key; the private half is not there
        assert (out / node / "tls" / "job-signing-pub.pem").is_file()
    assert (out / "coordinator" / "job-signing-key.pem").is_file()
    assert [p.parent.name for p in out.rglob("job-signing-key.pem")] == ["coordinator"]
    url = (out / "secrets" / "database_url").read_text().strip()
    assert url.startswith("postgresql+psycopg://fedtre:")
    assert (out / "secrets" / "postgres_password").read_text().strip() in url


def test_compose_governance_creates_people_with_tokens_and_the_project(demo_volumes, tmp_path):
    """governance.sh, run for real (twice) against a coordinator on the init volumes."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FEDTRE_DATABASE_URL": f"sqlite:///{tmp_path / 'coordinator.sqlite'}",
        "COORDINATOR_TLS": str(demo_volumes / "out" / "coordinator"),
        "USERS": str(demo_volumes / "out" / "users"),
    }
    serve = ["coordinator", "serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"]
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "fedtre.cli.main", *serve, "--tls-dir", env["COORDINATOR_TLS"]],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    agents = []
    try:
        assert coordinator.stdout is not None
        agent_port = re.search(r"listening on (\S+)", coordinator.stdout.readline())
        api = re.search(r"on (\S+)$", coordinator.stdout.readline().strip())
        assert agent_port and api, "the coordinator did not print its addresses"
        env["FEDTRE_COORDINATOR"] = api.group(1)
        # A project names only nodes that have registered: the agents come first (compose
        # starts governance once they are healthy).
        agents = [
            _compose_agent(demo_volumes, node, agent_port.group(1), tmp_path) for node in NODES
        ]
        for agent in agents:
            agent.start()
        for agent in agents:
            eventually(agent.connection.connected.is_set, what=f"{agent.config.node_id} online")
        for _ in range(2):  # a second run changes nothing and succeeds
            done = subprocess.run(
                ["sh", str(DEPLOY / "compose" / "governance.sh")],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
        users = demo_volumes / "out" / "users"
        for person in ("admin", "researcher", "approver"):
            assert stat.S_IMODE((users / person / "token").stat().st_mode) == 0o600
        whoami = subprocess.run(
            [sys.executable, "-m", "fedtre.cli.main", "whoami", "--json"],
            env={**env, "FEDTRE_IDENTITY": str(users / "researcher")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert whoami.returncode == 0, whoami.stderr
        assert json.loads(whoami.stdout) == {
            "name": "researcher",
            "role": "researcher",
            "projects": ["default"],
        }
    finally:
        for agent in agents:
            agent.stop()
        coordinator.terminate()
        coordinator.wait(timeout=30)


def _compose_agent(volumes: Path, node: str, coordinator: str, tmp_path: Path) -> Agent:
    """node's compose agent on the init volumes, dialling coordinator, metrics off."""
    text = (DEPLOY / "compose" / "agents" / f"{node}.toml").read_text()
    text = text.replace("/var/lib/fedtre", str(volumes / "out" / node))
    text = re.sub(r'coordinator = "[^"]*"', f'coordinator = "{coordinator}"', text)
    text = re.sub(r"(?m)^listen = .*$", 'listen = "127.0.0.1:0"', text)
    path = tmp_path / f"{node}.toml"
    path.write_text(text)
    return Agent(load_config(path))


@pytest.mark.parametrize("node", NODES)
def test_compose_agent_configs_load_against_the_init_volumes(demo_volumes, node, tmp_path):
    home = demo_volumes / "out" / node
    text = (DEPLOY / "compose" / "agents" / f"{node}.toml").read_text()
    path = tmp_path / "agent.toml"
    path.write_text(text.replace("/var/lib/fedtre", str(home)))

    config = load_config(path)

    assert config.node_id == node
    assert config.metrics_listen == f"0.0.0.0:{METRICS_PORT}"
    assert config.tls.cert == home / "tls" / "cert.pem"
    assert config.datasets["cohort"].url == f"sqlite:///{home}/data/cohort.sqlite"


# -- Kubernetes -----------------------------------------------------------------------


def _workloads(manifests: list[dict]) -> list[dict]:
    return [d for d in manifests if d["kind"] in ("Deployment", "StatefulSet")]


def test_kubernetes_has_coordinator_with_postgres_and_an_agent(manifests):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in manifests}

    assert {
        ("Deployment", "fedtre-coordinator"),
        ("Service", "fedtre-coordinator"),
        ("StatefulSet", "fedtre-postgres"),
        ("Service", "fedtre-postgres"),
        ("Deployment", "fedtre-agent"),
        ("PersistentVolumeClaim", "fedtre-agent-state"),
    } <= kinds
    images = {
        c["image"]
        for w in _workloads(manifests)
        for c in w["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"fedtre-coordinator:0.1.0", "fedtre-agent:0.1.0", "postgres:16-alpine"}


def test_kubernetes_pods_run_as_non_root_with_read_only_roots(manifests):
    for workload in _workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_kubernetes_secrets_are_mounted_as_files_never_env(manifests):
    for workload in _workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in pod["containers"]:
            for env in container.get("env", []):
                assert "valueFrom" not in env, f"{env['name']} comes from the environment"
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes or mount["name"] in claims
                if "secret" in volumes.get(mount["name"], {}):
                    assert mount["readOnly"] is True
    coordinator = next(
        w
        for w in manifests
        if w["metadata"]["name"] == "fedtre-coordinator" and w["kind"] == "Deployment"
    )
    pod = coordinator["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "fedtre-coordinator-tls", "database": "fedtre-database"}
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert env["FEDTRE_DATABASE_URL_FILE"].startswith(mounts["database"] + "/")
    assert env["FEDTRE_TLS_DIR"] == mounts["tls"]
    assert env["FEDTRE_METRICS_LISTEN"] == f"0.0.0.0:{METRICS_PORT}"


def test_kubernetes_probes_and_services_use_declared_ports(manifests):
    services = [d for d in manifests if d["kind"] == "Service"]
    for workload in _workloads(manifests):
        template = workload["spec"]["template"]
        assert (
            workload["spec"]["selector"]["matchLabels"].items()
            <= template["metadata"]["labels"].items()
        )
        for container in template["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                http = container[probe].get("httpGet")
                if http:
                    assert ports[http["port"]] == METRICS_PORT
                    assert http["path"] in ("/readyz", "/livez")
            for service in services:
                if service["spec"]["selector"].items() <= template["metadata"]["labels"].items():
                    for port in service["spec"]["ports"]:
                        assert port["targetPort"] in ports


def test_kubernetes_agent_example_config_loads(tmp_path):
    (tmp_path / "tls").mkdir()
    for name in ("ca", "cert", "key"):
        (tmp_path / "tls" / f"{name}.pem").write_text("placeholder")
    text = (DEPLOY / "kubernetes" / "agent" / "agent.example.toml").read_text()
    path = tmp_path / "agent.toml"
    path.write_text(text.replace("/etc/fedtre/tls", str(tmp_path / "tls")))

    config = load_config(path)

    assert config.datasets["cohort"].url.startswith("postgresql+psycopg://")
    assert config.metrics_listen == f"0.0.0.0:{METRICS_PORT}"


# -- Grafana and alerts against the real metrics --------------------------------------


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bfedtre_[a-z_]+\b", text))


def test_dashboard_and_alerts_use_only_metrics_the_processes_expose(exposed_samples):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fedtre.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [r["expr"] for g in alerts["groups"] for r in g["rules"]]

    used = _metric_names(" ".join(exprs + rules))

    assert len(used) >= 20
    assert used - exposed_samples == set()


def test_dashboard_is_provisioned_from_the_prometheus_datasource():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fedtre.json").read_text())
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "fedtre.yml").read_text()
    )["providers"][0]

    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_shell_scripts_parse():
    sh = shutil.which("sh")
    assert sh is not None
    for script in ("init.sh", "governance.sh"):
        done = subprocess.run([sh, "-n", str(DEPLOY / "compose" / script)], capture_output=True)
        assert done.returncode == 0, (script, done.stderr)


def test_coordinator_image_sets_and_exposes_the_api_port():
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile.coordinator").read_text())
    exposed = {
        port
        for line in text.splitlines()
        if line.startswith("EXPOSE ")
        for port in line.split()[1:]
    }
    env = dict(re.findall(r"(FEDTRE_\w+)=(\S+)", text))

    assert {"50051", "50052", str(METRICS_PORT)} <= exposed
    assert env["FEDTRE_LISTEN"] == "0.0.0.0:50051"  # agents, mutual TLS
    assert env["FEDTRE_API_LISTEN"] == "0.0.0.0:50052"  # people, API tokens


def test_kubernetes_publishes_only_the_grpc_ports_to_other_tres_with_tls_passed_through(manifests):
    coordinator = next(
        d
        for d in manifests
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "fedtre-coordinator"
    )
    container = coordinator["spec"]["template"]["spec"]["containers"][0]
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    external = [
        d for d in manifests if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"
    ]

    # one LoadBalancer, a plain TCP pass-through to the coordinator's two gRPC ports
    assert [s["metadata"]["name"] for s in external] == ["fedtre-coordinator-external"]
    spec = external[0]["spec"]
    assert spec["selector"].items() <= coordinator["spec"]["template"]["metadata"]["labels"].items()
    published = {p["port"]: named_ports[p["targetPort"]] for p in spec["ports"]}
    assert published == {50051: 50051, 50052: 50052}  # never the plain-HTTP metrics port
    assert all(p.get("protocol", "TCP") == "TCP" for p in spec["ports"])
    assert spec["loadBalancerSourceRanges"]  # a place to narrow it to the TREs' addresses

    # and the ingress alternative passes TLS through (mutual TLS ends at the coordinator)
    [ingress] = _yaml_docs(
        DEPLOY / "kubernetes" / "coordinator" / "ingress-passthrough.example.yaml"
    )
    assert ingress["kind"] == "Ingress"
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    )
    assert "tls" not in ingress["spec"]  # terminating TLS would strip the agents' certificates
    backends = {
        rule["host"]: path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert {b["name"] for b in backends.values()} == {"fedtre-coordinator"}
    services = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Service"}
    service_ports = {p["name"] for p in services["fedtre-coordinator"]["spec"]["ports"]}
    assert {b["port"]["name"] for b in backends.values()} == {"grpc", "api"}
    assert {"grpc", "api"} <= service_ports
