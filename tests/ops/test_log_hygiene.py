"""Logs as an operator reads them: no per-tick noise, one short line per failure, no SQL.

Everything goes through the entry points' logging (fedtre.logs.configure), captured.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from coordinator.scheduler import Scheduler
from fedtre import logs
from fedtre.testing import LocalNetwork

# A value that exists only in the query: it must never reach a log.
MARKER = 987_654_321


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger configured as an entry point does it, writing into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("apscheduler").level)
    stream = io.StringIO()
    logs.configure("INFO", stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("apscheduler").setLevel(saved[2])


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def sql_free(text: str) -> bool:
    return not any(word in text for word in ("SELECT", "[SQL", "[parameters", str(MARKER)))


def database_error() -> sa.exc.SQLAlchemyError:
    """A real SQLAlchemy error, its statement and bound values attached."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM missing WHERE id = :v"), {"v": MARKER})
    except sa.exc.SQLAlchemyError as exc:
        assert str(MARKER) in str(exc)  # the raw error does carry the value
        return exc
    raise AssertionError("the query should have failed")


def test_a_database_failure_is_one_line_naming_the_error_without_sql(captured):
    error = database_error()
    try:
        raise RuntimeError("wrapping") from error
    except RuntimeError:
        logging.getLogger("coordinator.service").exception("combining failed")
    logging.getLogger("coordinator.service").error("failed: %s", error)

    lines = captured.getvalue().splitlines()
    assert len(lines) == 2
    assert all(sql_free(line) for line in lines), lines
    first, second = events(captured)
    assert "exception" not in first
    assert first["error"] == (
        "RuntimeError <- OperationalError (sqlite3.OperationalError SQLITE_ERROR)"
    )
    assert second["event"] == "failed: OperationalError (sqlite3.OperationalError SQLITE_ERROR)"


def test_other_failures_keep_their_traceback(captured):
    try:
        raise KeyError("no such thing")
    except KeyError:
        logging.getLogger("x").exception("lookup failed")
    (event,) = events(captured)
    assert "Traceback" in event["exception"] and "no such thing" in event["exception"]


def test_the_scheduler_ticks_without_info_lines_and_fails_in_one(captured):
    ran, failed = threading.Event(), threading.Event()

    class Service:
        clock = staticmethod(lambda: None)
        calls = 0

        def expire_overdue(self, now):
            Service.calls += 1
            if Service.calls == 1:
                ran.set()
                return None
            failed.set()
            raise database_error()

    scheduler = Scheduler(Service(), interval=0.05)  # type: ignore[arg-type]
    scheduler.start()
    try:
        assert ran.wait(10) and failed.wait(10)
    finally:
        scheduler.stop()
    found = events(captured)
    chatter = [e for e in found if e["logger"].startswith("apscheduler")]
    # ("skipped: maximum number of running instances" may come, as a warning, rightly)
    assert not [e for e in chatter if e["level"] in ("debug", "info")], chatter
    tick_failures = [e for e in found if "tick failed" in e["event"]]
    assert tick_failures and all(sql_free(json.dumps(e)) for e in tick_failures)
    assert all("exception" not in e for e in tick_failures)


def test_a_filter_of_255_thousand_values_fails_in_one_sql_free_line(captured):
    frame = pd.DataFrame({"age": list(range(20, 80)) * 2})
    huge = {
        "or": [
            {"col": "age", "op": "in", "value": [MARKER + i * 1000 + j for j in range(1000)]}
            for i in range(255)
        ]
    }
    with LocalNetwork({"tre-a": {"cohort": frame}}) as net, net.client() as client:
        result = client.submit("count", dataset="cohort", params={"filter": huge}).result(60)
    assert result.job.state == "failed"
    task_id = result.nodes["tre-a"].task_id

    text = captured.getvalue()
    assert sql_free(text), "SQL or a bound value reached the log"
    found = events(captured)
    failures = [
        e for e in found if e.get("task_id") == task_id and e["level"] in ("error", "critical")
    ]
    assert len(failures) == 1, failures
    assert "exception" not in failures[0] and len(json.dumps(failures[0])) < 1000
    # The coordinator's scheduler ticked during the run, without a line at INFO.
    chatter = [e for e in found if e["logger"].startswith("apscheduler")]
    assert not [e for e in chatter if e["level"] in ("debug", "info")], chatter
