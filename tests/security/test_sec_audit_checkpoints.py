"""Signed audit checkpoints: a rollback or a rewrite of the log by its own writer is caught.

A log cut short with its head moved back, or rewritten with every hash recomputed, still
walks as an intact chain (`fedtre audit verify` says so), so each is checked against a
checkpoint taken before: the coordinator signed it, the agents countersigned it, and
`fedtre audit verify --checkpoint FILE` must fail. The tampering is done on copies of
the coordinator's database, except the last test's, which rolls the live log back and
expects the agents to notice.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import grpc
import pytest
from sectools import OPEN_POLICY, cli, data, start, wait_for

from fedtre import checkpoints
from fedtre.audit import GENESIS, entry_hash
from fedtre.cli.main import main as fedtre_main
from fedtre.identity.tls import TlsFiles, channel_credentials
from fedtre.testing import LocalNetwork
from fedtre.v1 import agent_pb2, agent_pb2_grpc
from node_agent import audit as agent_audit

NODES = ("tre-a", "tre-b")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = start(
        LocalNetwork(
            data(*NODES),
            policy=OPEN_POLICY,
            ping_interval=0.3,
            directory=tmp_path_factory.mktemp("checkpoints"),
        )
    )
    run_jobs(network, 2)
    yield network
    network.stop()


def run_jobs(net: LocalNetwork, n: int) -> None:
    with net.client() as researcher:
        for _ in range(n):
            assert researcher.submit("count", dataset="cohort").result(20).state == "completed"


def published_and_countersigned(net: LocalNetwork) -> checkpoints.SignedCheckpoint:
    """Publish a checkpoint now and wait until every agent countersigned it."""
    signed = net.coordinator.checkpoints.publish_if_due(force=True)
    assert signed is not None
    size = checkpoints.parse(signed.data).size

    def countersigned() -> bool:
        latest = net.coordinator.checkpoints.latest()
        return (
            latest is not None
            and checkpoints.parse(latest.data).size == size
            and {c.node for c in latest.countersignatures} == set(NODES)
        )

    wait_for(countersigned, what="both agents' countersignatures")
    return signed


def database(net: LocalNetwork) -> Path:
    return net.directory / "coordinator.sqlite"


def copy_of(net: LocalNetwork, tmp_path: Path) -> Path:
    """A consistent copy of the live coordinator database (SQLite's backup API)."""
    target = tmp_path / "copy.sqlite"
    with sqlite3.connect(database(net)) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def keys(net: LocalNetwork) -> list[str]:
    pki = net.pki
    return [
        "--verify-key", str(pki / "nodes" / "tre-a" / "job-signing-pub.pem"),
        "--ca", str(pki / "ca" / "ca.pem"),
    ]  # fmt: skip


def offline(path: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{path}"]


def api(net: LocalNetwork) -> list[str]:
    return ["--coordinator", net.api_address, "--identity", str(net.identity("admin"))]


@pytest.fixture(scope="module")
def checkpoint_file(net, tmp_path_factory) -> Path:
    published_and_countersigned(net)
    path = tmp_path_factory.mktemp("cp") / "checkpoint.json"
    code = cli_plain("audit", "checkpoint", "--out", str(path), *offline(database(net)))
    assert code == 0
    return path


def cli_plain(*argv: str) -> int:
    """Run the CLI where no capsys is at hand (a module-scoped fixture)."""
    return fedtre_main(list(argv))


# -- checkpoints are published, countersigned and written ----------------------------------


def test_the_checkpoint_file_is_signed_countersigned_and_private(net, checkpoint_file, capsys):
    assert stat.S_IMODE(checkpoint_file.stat().st_mode) == 0o600
    signed = checkpoints.read_file(checkpoint_file)
    assert {c.node for c in signed.countersignatures} == set(NODES)
    # Through the API the same checkpoint is found in the exported log.
    path = checkpoint_file.with_name("via-api.json")
    code, out, _ = cli(capsys, "audit", "checkpoint", "--out", str(path), *api(net))
    assert code == 0 and "countersigned by tre-a, tre-b" in out
    assert checkpoints.read_file(path) == signed
    # Each agent kept it, audited that it countersigned it, and can write it out.
    for node in NODES:
        seen = [e for e in agent_audit.entries(net.agents[node].state.engine)]
        counted = [e for e in seen if e.event == "audit.checkpoint_countersigned"]
        assert counted and counted[-1].details["size"] == checkpoints.parse(signed.data).size


def test_the_log_verifies_against_a_checkpoint_taken_before_it_grew(
    net, checkpoint_file, capsys, tmp_path
):
    run_jobs(net, 1)
    code, out, _ = cli(
        capsys, "audit", "verify", "--checkpoint", str(checkpoint_file), *keys(net), *api(net)
    )
    assert code == 0 and "countersigned by tre-a, tre-b" in out, out
    code, out, _ = cli(
        capsys, "audit", "verify", "--checkpoint", str(checkpoint_file), *keys(net),
        *offline(copy_of(net, tmp_path)),
    )  # fmt: skip
    assert code == 0, out
    # An agent's own copy of the checkpoint verifies the coordinator's log as well.
    agent_file = tmp_path / "agent-checkpoint.json"
    config = net.directory / "nodes" / "tre-b" / "agent.toml"
    code, out, _ = cli(
        capsys, "agent", "audit", "checkpoint", "--config", str(config), "--out", str(agent_file)
    )
    assert code == 0, out
    code, out, _ = cli(
        capsys, "audit", "verify", "--checkpoint", str(agent_file), *keys(net), *api(net)
    )
    assert code == 0 and "countersigned by tre-b" in out, out


def roll_back(path: Path, keep: int) -> None:
    """Cut the log to its first `keep` entries and move the head back: a consistent chain."""
    with sqlite3.connect(path) as conn:
        (last,) = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (keep,)).fetchone()
        conn.execute("DELETE FROM audit_log WHERE seq > ?", (keep,))
        conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (keep, last))


def rewrite(path: Path) -> None:
    """Alter entry 2 and recompute every hash after it, and the head: a consistent chain."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        prev = GENESIS
        rows = conn.execute(
            "SELECT seq, at, actor, event, subject, details FROM audit_log ORDER BY seq"
        ).fetchall()
        for seq, at, actor, event, subject, details in rows:
            digest = entry_hash(prev, seq, at, actor, event, subject, details)
            conn.execute(
                "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
            )
            prev = digest
        conn.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (lambda path, size: roll_back(path, size - 3), "rolled back"),
        (lambda path, size: rewrite(path), "rewritten"),
    ],
    ids=["truncated-and-head-moved-back", "whole-chain-recomputed"],
)
def test_a_rollback_or_rewrite_passes_the_chain_but_fails_the_checkpoint(
    net, checkpoint_file, capsys, tmp_path, tamper, words
):
    size = checkpoints.parse(checkpoints.read_file(checkpoint_file).data).size
    copy = copy_of(net, tmp_path)
    tamper(copy, size)
    # The chain alone cannot tell,
    code, out, _ = cli(capsys, "audit", "verify", *offline(copy))
    assert code == 0 and out.startswith("audit log intact"), out
    # the checkpoint can.
    code, out, _ = cli(
        capsys, "audit", "verify", "--checkpoint", str(checkpoint_file), *keys(net),
        *offline(copy),
    )  # fmt: skip
    assert code == 1 and words in out, out


def test_a_forged_or_altered_checkpoint_is_refused(net, checkpoint_file, capsys, tmp_path):
    value = json.loads(checkpoint_file.read_text())
    content = json.loads(value["checkpoint"])
    content["size"] = 1  # an older, smaller prefix: would let a rollback pass
    value["checkpoint"] = json.dumps(content, sort_keys=True, separators=(",", ":"))
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(value))
    code, _, err = cli(
        capsys, "audit", "verify", "--checkpoint", str(forged), *keys(net), *api(net)
    )
    assert code != 0 and "signature does not verify" in err
    code, _, err = cli(capsys, "audit", "verify", "--checkpoint", str(checkpoint_file), *api(net))
    assert code != 0 and "--verify-key" in err


def test_agents_refuse_to_countersign_a_rolled_back_log(net, checkpoint_file):
    # Given checkpoints every agent countersigned,
    before = published_and_countersigned(net)
    size = checkpoints.parse(before.data).size
    # when the database's writer rolls the live log back and the coordinator publishes
    # a checkpoint of what is left,
    roll_back(database(net), size - 5)
    rolled = net.coordinator.checkpoints.publish_if_due(force=True)
    assert rolled is not None and checkpoints.parse(rolled.data).size < size

    # then each agent records the rollback in its own log and does not countersign.
    def detected(node: str) -> bool:
        return any(
            e.event == "audit.rollback_detected"
            for e in agent_audit.entries(net.agents[node].state.engine)
        )

    for node in NODES:
        wait_for(lambda node=node: detected(node), what=f"{node} to detect the rollback")
    latest = net.coordinator.checkpoints.latest()
    assert latest is not None and latest.data == rolled.data
    assert latest.countersignatures == ()
    # The agents' copies of the earlier checkpoint still prove it.
    detail = [
        e.details
        for e in agent_audit.entries(net.agents["tre-a"].state.engine)
        if e.event == "audit.rollback_detected"
    ][-1]
    assert (detail["seen_size"], detail["received_size"]) == (
        size,
        checkpoints.parse(rolled.data).size,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda signed: (b"\xff not json", b"sig"),
        lambda signed: (signed.data.replace(b'"log":"coordinator"', b'"log":"\xc3\xa9"'), b"x"),
        lambda signed: (signed.data, b"not a signature"),
    ],
    ids=["garbage", "not-published", "bad-countersignature"],
)
def test_a_bad_countersignature_is_invalid_argument_and_not_recorded(net, make):
    signed = net.coordinator.checkpoints.newest()
    assert signed is not None
    before = net.coordinator.checkpoints.latest()
    data, signature = make(signed)
    creds = channel_credentials(TlsFiles.from_dir(net.pki / "nodes" / "tre-a"))
    with grpc.secure_channel(net.address, creds) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.CountersignCheckpoint(
                agent_pb2.CountersignCheckpointRequest(checkpoint=data, signature=signature),
                timeout=10,
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert net.coordinator.checkpoints.latest() == before
