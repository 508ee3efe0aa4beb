"""Every file fedtre writes is its owner's alone (0600), in folders it creates 0700.

Each writer runs under a permissive umask (022, the usual default), into folders that do
not exist yet, and every file and folder it leaves behind is checked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sectools import OPEN_POLICY, TOKENS, cli

from coordinator.store.store import Store
from fedtre.credentials import write_token_file
from fedtre.synth import write_cohorts
from fedtre.testing import LocalNetwork
from node_agent.secret import load_or_create_secret
from node_agent.state import AgentState


@pytest.fixture(autouse=True)
def _permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes_under(root: Path) -> dict[str, int]:
    """Return relative path -> permission bits of everything under root (root excluded)."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


def assert_private(root: Path, expect_files: set[str]) -> None:
    modes = modes_under(root)
    assert expect_files <= set(modes), f"missing: {expect_files - set(modes)}"
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert not wrong, f"not private: {wrong}"


def test_the_coordinator_database_and_its_wal_files(tmp_path):
    root = tmp_path / "new"
    store = Store(f"sqlite:///{root / 'db' / 'coordinator.sqlite'}")
    try:
        # An audited write, so SQLite has its -wal and -shm files open.
        store.governance.audit(actor="admin", event="test", now=None)
        assert_private(
            root,
            {
                "db",
                "db/coordinator.sqlite",
                "db/coordinator.sqlite-wal",
                "db/coordinator.sqlite-shm",
            },
        )
    finally:
        store.close()


def test_the_agents_state_database_and_secret(tmp_path):
    root = tmp_path / "new"
    state = AgentState(root / "state" / "agent.sqlite")
    try:
        load_or_create_secret(root / "secret" / "cell-key.secret")
        assert_private(root, {"state/agent.sqlite", "secret/cell-key.secret"})
    finally:
        state.close()


def test_audit_export_output(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'coordinator.sqlite'}"
    store = Store(url)
    store.governance.audit(actor="admin", event="test", now=None)
    store.close()
    out = tmp_path / "exports" / "deep" / "audit.jsonl"
    code, _, err = cli(capsys, "audit", "export", "--database-url", url, "--out", str(out))
    assert code == 0 and "wrote 1 audit entries" in err
    assert_private(tmp_path / "exports", {"deep/audit.jsonl"})


def test_a_networks_pki_files(tmp_path, capsys):
    root = tmp_path / "net"
    code, _, _ = cli(capsys, "ca", "init", str(root), "--nodes", "tre-a")
    assert code == 0
    assert_private(
        root,
        {"ca/ca.pem", "ca/ca.key", "nodes/tre-a/cert.pem", "nodes/tre-a/job-signing-pub.pem"},
    )
    code, _, _ = cli(capsys, "ca", "issue-node", str(root), "tre-b")
    assert code == 0
    code, _, _ = cli(capsys, "ca", "renew", str(root), "tre-b")
    assert code == 0
    code, _, _ = cli(capsys, "ca", "revoke", str(root), "tre-a")
    assert code == 0
    assert_private(root, {"ca/crl.pem", "nodes/tre-b/job-signing-pub.pem", "nodes/tre-b/ca.pem"})


def test_the_first_admins_identity_folder(tmp_path, capsys):
    cli(capsys, "ca", "init", str(tmp_path / "net"), "--nodes", "tre-a")
    url = f"sqlite:///{tmp_path / 'db' / 'coordinator.sqlite'}"
    code, _, err = cli(
        capsys, "coordinator", "bootstrap-admin", "admin", "--out", str(tmp_path / "id" / "admin"),
        "--tls-dir", str(tmp_path / "net" / "coordinator"), "--database-url", url,
    )  # fmt: skip
    assert code == 0, err
    TOKENS.add((tmp_path / "id" / "admin" / "token").read_text().strip())
    assert_private(tmp_path / "id", {"admin/token", "admin/ca.pem"})
    assert_private(tmp_path / "db", {"coordinator.sqlite"})


def test_token_files_and_synthetic_exports(tmp_path):
    token = "ft1.0123456789ab.not-a-real-secret"
    TOKENS.add(token)  # the suite's check that no token reaches a log covers it too
    write_token_file(tmp_path / "tokens" / "alice" / "token", token)
    write_cohorts(tmp_path / "synth" / "csv", n_nodes=2, rows=20)
    write_cohorts(tmp_path / "synth" / "sqlite", n_nodes=1, rows=20, fmt="sqlite")
    assert_private(tmp_path / "tokens", {"alice/token"})
    assert_private(tmp_path / "synth", {"csv/tre-a.csv", "sqlite/tre-a.sqlite"})


def test_an_older_world_readable_database_is_made_private(tmp_path):
    path = tmp_path / "agent.sqlite"
    path.touch()
    os.chmod(path, 0o644)
    with AgentState(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_running_networks_databases_secret_and_agent_export(tmp_path, capsys):
    frame = pd.DataFrame({"age": list(range(20, 80))})
    with LocalNetwork(
        {"tre-a": {"cohort": frame}}, policy=OPEN_POLICY, directory=tmp_path / "net"
    ) as net:
        with net.client() as researcher:
            assert researcher.submit("count", dataset="cohort").result(20).state == "completed"
        config = net.directory / "nodes" / "tre-a" / "agent.toml"
        out = tmp_path / "exports" / "agent-audit.jsonl"
        code, _, err = cli(
            capsys, "agent", "audit", "export", "--config", str(config), "--out", str(out)
        )
        assert code == 0, err
        home = net.directory / "nodes" / "tre-a"
        written = {
            net.directory / "coordinator.sqlite",
            home / "agent-state.sqlite",
            home / "agent-state-cell-key-secret",
            out,
        }
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        wal = [p for p in net.directory.rglob("*-wal")] + [p for p in net.directory.rglob("*-shm")]
        assert wal and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in wal), wal
    assert_private(tmp_path / "exports", {"agent-audit.jsonl"})
