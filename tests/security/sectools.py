"""Helpers of the security suite: small networks, raw calls, the audit log, the CLI."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from fedtre.audit import AuditEntry
from fedtre.cli.main import main as fedtre_main
from fedtre.testing import LocalNetwork, eventually

TIMEOUT = 10
# Permissive disclosure: these tests are about who may run what, not about small cells.
OPEN_POLICY = {"threshold": 0, "rounding_base": 1, "perturbation": "rounding"}

# Every token the suite has seen, and every log record it produced.
TOKENS: set[str] = set()
RECORDS: list[str] = []


class LogTrap(logging.Handler):
    """Keeps every record as text: its message and all its fields."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is still text to search
            text = f"{record.msg} {record.args}"
        fields = {k: v for k, v in vars(record).items() if k not in ("msg", "args")}
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        RECORDS.append(f"{text} {fields!r} {trace}")


def frame(n: int = 120, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "bmi": rng.normal(27, 4, n).round(1),
        }
    )


def data(*nodes: str) -> dict[str, dict[str, pd.DataFrame]]:
    return {node: {"cohort": frame(seed=i)} for i, node in enumerate(nodes)}


def start(net: LocalNetwork) -> LocalNetwork:
    """Enter net and remember its tokens (they must never be logged)."""
    net.__enter__()
    TOKENS.update(net.tokens.values())
    return net


def token_channel(net: LocalNetwork, token: str | None) -> grpc.Channel:
    """A TLS channel to the API port carrying token (None: no token at all)."""
    from fedtre.credentials import person_credentials

    if token:
        TOKENS.add(token)
    creds = person_credentials(ca=net.pki / "ca" / "ca.pem", token=token)
    return grpc.secure_channel(net.api_address, creds)


def code_of(call: Any, request: Any, **kwargs: Any) -> grpc.StatusCode:
    """The status code a unary call (or the first message of a stream) ends with."""
    try:
        response = call(request, timeout=TIMEOUT, **kwargs)
        if hasattr(response, "__next__"):
            next(response)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def head(net: LocalNetwork) -> int:
    """The newest audit sequence number of the coordinator."""
    entries = list(net.coordinator.store.governance.audit_entries())
    return entries[-1].seq if entries else 0


def audit_since(net: LocalNetwork, since: int) -> list[AuditEntry]:
    return list(net.coordinator.store.governance.audit_entries(since))


def events(net: LocalNetwork, since: int, event: str) -> list[AuditEntry]:
    return [e for e in audit_since(net, since) if e.event == event]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `fedtre argv...` in this process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = fedtre_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def agent_tasks(net: LocalNetwork, node: str) -> set[str]:
    """The ids of every task the node's agent has recorded as received (run or refused)."""
    import sqlalchemy as sa

    from node_agent.state import tasks

    with net.agents[node].state.engine.connect() as conn:
        return set(conn.scalars(sa.select(tasks.c.task_id)))


def agent_events(net: LocalNetwork, node: str, event: str) -> list[AuditEntry]:
    from node_agent import audit

    return [e for e in audit.entries(net.agents[node].state.engine) if e.event == event]


def wait_for(condition: Any, timeout: float = 20.0, what: str = "the condition") -> None:
    """Poll condition() until it is true (the network runs in other threads)."""
    eventually(condition, timeout, interval=0.02, what=what)
