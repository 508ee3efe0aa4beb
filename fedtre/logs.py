"""Logging for the entry points: one JSON object per line, ids in fields, never secrets or data.

A failure whose cause is a database error is logged without its traceback: SQLAlchemy's
messages carry the statement and its bound values (a filter's 255,000 values, a TRE's
record-key seed, a researcher's data), so such an error is named by its classes and the
driver's error code only, in one short line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import exc as sa_exc

# Attributes every LogRecord has; anything else came from `extra=` and is a structured field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Chatty third-party loggers kept to warnings unless the operator asks for DEBUG
# (APScheduler logs "Running job" and "executed successfully" at INFO on every tick).
QUIET_LOGGERS = ("apscheduler",)


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def database_error_summary(exc: BaseException) -> str | None:
    """Return a one-line, SQL-free account of exc if a database error is among its causes.

    None when no database error is involved (the traceback is then safe to log).
    """
    chain = _chain(exc)
    if not any(isinstance(e, sa_exc.SQLAlchemyError) for e in chain):
        return None
    parts = []
    named: list[BaseException] = []  # drivers' errors, named with the error they caused
    for error in chain:
        if any(error is n for n in named):
            continue
        if isinstance(error, sa_exc.SQLAlchemyError):
            orig = getattr(error, "orig", None)
            name = type(error).__name__
            if orig is not None:
                named.append(orig)
                code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None)
                name += f" ({type(orig).__module__}.{type(orig).__name__}"
                name += f" {code})" if code else ")"
            parts.append(name)
        elif getattr(error, "__module__", "").startswith("fedtre"):
            parts.append(f"{type(error).__name__}: {error}")  # fedtre messages are public
        else:
            parts.append(type(error).__name__)
    return " <- ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _message(record),
        }
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[1] is not None:
            summary = database_error_summary(record.exc_info[1])
            if summary is None:
                event["exception"] = self.formatException(record.exc_info)
            else:
                event["error"] = summary
        return json.dumps(event, default=str)


def _message(record: logging.LogRecord) -> str:
    """The record's message, with any database error among its arguments summarised."""
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, BaseException) for a in args):
        safe = tuple(
            (database_error_summary(a) or a) if isinstance(a, BaseException) else a for a in args
        )
        return str(record.msg) % safe if safe else str(record.msg)
    return record.getMessage()


def configure(level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to stream (stderr) as JSON lines; return the handler.

    Called by entry points only.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    return handler
