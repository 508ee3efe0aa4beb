"""CSV cells a spreadsheet will not run as formulas (CSV injection).

Excel and LibreOffice read a cell opening with =, +, -, @ (or a tab or carriage return)
as a formula, so text like `=HYPERLINK(...)` in a download would run when opened. Such
text gets a leading ' (shown, not run); numbers are left as they are.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def guarded(value: Any) -> Any:
    """value, with a ' before text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
