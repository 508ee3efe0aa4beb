"""Suggestions for a mistyped name: "did you mean 'sbp'?" (difflib's closest match)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to name (difflib ratio at least 0.6), or None."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'sbp'?)" for the closest choice, or "" when none is close."""
    found = nearest(name, choices)
    return f" (did you mean {found!r}?)" if found else ""


def columns_hint(name: str, declared: Iterable[str]) -> str:
    """What follows "column X is not declared": a suggestion, then the declared columns."""
    columns = sorted(declared)
    return f"{did_you_mean(name, columns)}; declared columns: {', '.join(columns) or '(none)'}"
