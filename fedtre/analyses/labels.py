"""Category labels: one string form per value whatever the engine returns, and their order."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def category_label(value: Any, column_type: str) -> str | None:
    """Return the label of a category value of a column of declared type `column_type`.

    Labels are strings so they survive a Struct round trip and match across nodes:
    integer 1 (or 1.0, which SQLite returns when the column also holds NULLs) is "1";
    a boolean (SQLite stores 0/1) is "true" or "false"; NULL stays None, its own level.
    """
    if value is None:
        return None
    if column_type == "boolean":
        if isinstance(value, str):
            return "true" if value.strip().lower() in ("1", "true", "t", "yes") else "false"
        return "true" if value else "false"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))
    return str(value)


def label_key(label: str | None) -> tuple[int, float, str]:
    """Sort key for labels: numbers in numeric order, then other strings, then None last."""
    if label is None:
        return (2, 0.0, "")
    if _NUMBER.fullmatch(label):
        return (0, float(label), label)
    return (1, 0.0, label)
