"""`fedtre audit verify|export` and `fedtre agent audit verify|export`: tampering is caught.

Each side's log is altered, cut and reordered in its database, and the CLI must name the
first broken link; untouched, it must say intact; export writes one JSON object a line.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sectools import OPEN_POLICY, cli, data, jsonl, start

from fedtre.audit import GENESIS
from fedtre.testing import LocalNetwork

COLUMNS = ("seq", "at", "actor", "event", "subject", "details", "prev_hash", "hash")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data("tre-a"),
            policy=OPEN_POLICY,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("audit"),
        )
    )
    with network.client() as researcher:
        for _ in range(4):
            assert researcher.submit("count", dataset="cohort").result(20).state == "completed"
    yield network
    network.stop()


def coordinator_db(net: LocalNetwork) -> Path:
    return net.directory / "coordinator.sqlite"


def agent_config(net: LocalNetwork, node: str = "tre-a") -> Path:
    return net.directory / "nodes" / node / "agent.toml"


def api(net: LocalNetwork, user: str = "admin") -> list[str]:
    return ["--coordinator", net.api_address, "--identity", str(net.identity(user))]


# Each tampering: what it does to the table, and the link verify must report as broken.
def alter(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
    return 5


def delete(conn: sqlite3.Connection) -> int:
    conn.execute("DELETE FROM audit_log WHERE seq = 7")
    return 7


def reorder(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE audit_log SET seq = -1 WHERE seq = 3")
    conn.execute("UPDATE audit_log SET seq = 3 WHERE seq = 4")
    conn.execute("UPDATE audit_log SET seq = 4 WHERE seq = -1")
    return 3


TAMPERINGS = [alter, delete, reorder]


@contextmanager
def tampered(database: Path, how: Callable[[sqlite3.Connection], int]) -> Iterator[int]:
    """Tamper with the log, yield the link that breaks, then put every row back."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE seq <= 10"
        ).fetchall()
        assert len(rows) == 10
        broken = how(conn)
    try:
        yield broken
    finally:
        with sqlite3.connect(database) as conn:
            conn.execute("DELETE FROM audit_log WHERE seq <= 10")
            conn.executemany(
                f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )


# -- the coordinator ----------------------------------------------------------------------


def test_the_untouched_coordinator_log_verifies_and_exports_as_json_lines(net, capsys, tmp_path):
    code, out, _ = cli(capsys, "audit", "verify", *api(net))
    assert code == 0 and out.startswith("audit log intact")
    out_file = tmp_path / "audit.jsonl"
    code, _, err = cli(capsys, "audit", "export", "--out", str(out_file), *api(net))
    assert code == 0
    entries = jsonl(out_file.read_text())
    assert f"wrote {len(entries)} audit entries" in err
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    seen = {e["event"] for e in entries}
    expected = {"user.created", "token.issued", "project.created", "job.submitted"}
    expected |= {"job.approved", "task.dispatched", "task.reported", "job.completed"}
    assert expected | {"auth.login", "result.read", "node.connected"} <= seen
    # --since gives the tail only, on stdout.
    code, out, _ = cli(capsys, "audit", "export", "--since", "5", *api(net))
    assert [e["seq"] for e in jsonl(out)][:2] == [6, 7]


@pytest.mark.parametrize("how", TAMPERINGS, ids=lambda f: f.__name__)
def test_coordinator_audit_verify_reports_the_first_broken_link(net, capsys, how):
    with tampered(coordinator_db(net), how) as broken:
        # through the API, as an admin,
        code, out, _ = cli(capsys, "audit", "verify", "--json", *api(net))
        assert code == 1
        report = json.loads(out)
        assert (report["ok"], report["broken_at"]) == (False, broken)
        assert report["entries"] == broken - 1
        # and offline, on the database itself.
        url = f"sqlite:///{coordinator_db(net)}"
        code, out, _ = cli(capsys, "audit", "verify", "--database-url", url)
        assert code == 1 and f"BROKEN at entry {broken}" in out
    assert cli(capsys, "audit", "verify", *api(net))[0] == 0


def test_the_audit_log_is_for_admins_only(net, capsys):
    code, out, err = cli(capsys, "audit", "verify", *api(net, "researcher"))
    assert code == 2 and "needs one of ['admin']" in err and out == ""
    code, out, err = cli(capsys, "audit", "export", *api(net, "approver"))
    assert code == 2 and out == ""


# -- the agent ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_db(net):
    # The agent is stopped so that nothing is appended while its log is inspected.
    path = Path(net.agents["tre-a"].config.state_db)
    net.stop_agent("tre-a")
    return path


def test_the_untouched_agent_log_verifies_and_exports(net, agent_db, capsys, tmp_path):
    code, out, _ = cli(capsys, "agent", "audit", "verify", "--config", str(agent_config(net)))
    assert code == 0 and out.startswith("agent audit log intact")
    out_file = tmp_path / "agent.jsonl"
    code, _, _ = cli(
        capsys, "agent", "audit", "export", "--config", str(agent_config(net)),
        "--out", str(out_file),
    )  # fmt: skip
    assert code == 0
    entries = jsonl(out_file.read_text())
    assert len(entries) >= 10
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    events = [e["event"] for e in entries]
    assert events.count("task.received") == 4 and events.count("output.released") == 4


@pytest.mark.parametrize("how", TAMPERINGS, ids=lambda f: f.__name__)
def test_agent_audit_verify_reports_the_first_broken_link(net, agent_db, capsys, how):
    config = str(agent_config(net))
    with tampered(agent_db, how) as broken:
        code, out, _ = cli(capsys, "agent", "audit", "verify", "--config", config, "--json")
        report = json.loads(out)
        assert code == 1
        assert (report["ok"], report["broken_at"], report["entries"]) == (False, broken, broken - 1)
        code, out, _ = cli(capsys, "agent", "audit", "verify", "--config", config)
        assert code == 1 and f"BROKEN at entry {broken}" in out
    assert cli(capsys, "agent", "audit", "verify", "--config", config)[0] == 0


def test_a_log_cut_short_at_its_end_is_caught(net, agent_db, capsys):
    config = str(agent_config(net))
    with sqlite3.connect(agent_db) as conn:
        (last,) = conn.execute("SELECT max(seq) FROM audit_log").fetchone()
        row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE seq = ?", (last,))
        saved = row.fetchone()
        conn.execute("DELETE FROM audit_log WHERE seq = ?", (last,))
    try:
        code, out, _ = cli(capsys, "agent", "audit", "verify", "--config", config)
        assert code == 1 and f"BROKEN at entry {last}" in out and "deleted from the end" in out
    finally:
        with sqlite3.connect(agent_db) as conn:
            conn.execute(
                f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                saved,
            )
