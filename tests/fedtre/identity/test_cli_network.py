"""`fedtre network init` and `add-node` through the real command-line entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtre.cli import main as cli
from fedtre.identity.peer import Identity, identity_from_pem


@pytest.fixture(autouse=True)
def _network_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("network",))


def test_init_writes_bundles_and_says_who_gets_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["network", "init", str(tmp_path), "--nodes", "tre-a, tre-b", "--users", "admin"]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert f"{tmp_path / 'nodes' / 'tre-a'}/" in out and "operator of TRE tre-b" in out
    assert "PRIVATE KEY" not in out
    assert sorted(p.name for p in (tmp_path / "users").iterdir()) == ["admin"]


def test_init_uses_the_given_hosts(tmp_path: Path) -> None:
    assert cli.main(["network", "init", str(tmp_path), "--nodes", "tre-a", "--hosts", "coord"]) == 0

    assert b"BEGIN CERTIFICATE" in (tmp_path / "coordinator" / "cert.pem").read_bytes()


def test_init_twice_fails_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["network", "init", str(tmp_path), "--nodes", "tre-a"])
    capsys.readouterr()

    code = cli.main(["network", "init", str(tmp_path), "--nodes", "tre-a"])

    assert code == 2
    assert "add-node" in capsys.readouterr().err


def test_add_node_issues_one_more_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["network", "init", str(tmp_path), "--nodes", "tre-a"])

    code = cli.main(["network", "add-node", str(tmp_path), "tre-d"])

    assert code == 0
    assert "operator of TRE tre-d" in capsys.readouterr().out
    pem = (tmp_path / "nodes" / "tre-d" / "cert.pem").read_bytes()
    assert identity_from_pem(pem) == Identity("tre-d", "node")


def test_add_user_issues_the_given_role(tmp_path: Path) -> None:
    cli.main(["network", "init", str(tmp_path), "--nodes", "tre-a"])

    assert cli.main(["network", "add-user", str(tmp_path), "ops", "--role", "admin"]) == 0

    pem = (tmp_path / "users" / "ops" / "cert.pem").read_bytes()
    assert identity_from_pem(pem) == Identity("ops", "admin")


def test_bad_node_id_fails_with_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["network", "init", str(tmp_path), "--nodes", "TRE_A"])

    assert code == 2
    assert "lower-case letters" in capsys.readouterr().err
    assert not (tmp_path / "ca").exists()
