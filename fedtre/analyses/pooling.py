"""Coordinator helpers: which outputs to combine, reading their payloads, pooling moments."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedtre.analyses.base import NodeOutput, Outcome
from fedtre.errors import InvalidRequest

# Only outputs that passed their node's disclosure check (wholly or in part) are combined.
COMBINED_OUTCOMES = frozenset({Outcome.RELEASED, Outcome.SUPPRESSED})


@dataclass(frozen=True)
class Partition:
    """The nodes whose outputs are combined (with their payloads) and those left out.

    A BLOCKED node is left out but not ignored: it ran the analysis and its disclosure
    rules withheld everything, so it withheld its part of every combined value and each
    of those is null (summing the others would present a partial sum as the pooled
    value, and more suppression would then yield more numbers). A REFUSED or FAILED node
    holds no known part; the result is over the other nodes and `nodes` says so.
    """

    included: dict[str, Mapping[str, Any]]
    excluded: dict[str, str]

    @property
    def blocked(self) -> list[str]:
        """Nodes that withheld every value, sorted: BLOCKED, or still HELD for review.

        A job normally waits for held outputs; should one be combined while a node's
        output is still held, that node's part is withheld like a blocked node's.
        """
        withholding = (Outcome.BLOCKED.value, Outcome.HELD.value)
        return sorted(n for n, o in self.excluded.items() if o in withholding)

    @property
    def nodes(self) -> dict[str, Any]:
        """The "nodes" field of a combined result: included ids, excluded ids -> outcome."""
        return {
            "included": sorted(self.included),
            "excluded": {node: self.excluded[node] for node in sorted(self.excluded)},
        }


def partition(outputs: Mapping[str, NodeOutput]) -> Partition:
    """Split node outputs into those to combine (RELEASED, SUPPRESSED) and the rest."""
    included: dict[str, Mapping[str, Any]] = {}
    excluded: dict[str, str] = {}
    for node, output in outputs.items():
        outcome = Outcome(output.outcome)
        if outcome in COMBINED_OUTCOMES:
            if not isinstance(output.payload, Mapping):
                raise malformed(node, "the payload is not an object")
            included[node] = output.payload
        else:
            excluded[node] = outcome.value
    return Partition(included, excluded)


def malformed(node: str, why: str) -> InvalidRequest:
    """Return the error for a node payload that does not have its analysis's shape."""
    return InvalidRequest(f"node {node!r} sent a malformed payload: {why}")


def as_count(value: Any, node: str, what: str) -> int | None:
    """Return a released count as an int (a Struct round trip makes it a float), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise malformed(node, f"{what} is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise malformed(node, f"{what} is not a whole number")
    if value < 0:
        raise malformed(node, f"{what} is negative")
    return int(value)


def as_float(value: Any, node: str, what: str) -> float | None:
    """Return a released statistic as a float, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise malformed(node, f"{what} is not a number")
    return float(value)


def as_label(value: Any, node: str, what: str) -> str | None:
    """Return a category label (a string or None)."""
    if value is not None and not isinstance(value, str):
        raise malformed(node, f"{what} is not a string label")
    return value


def as_rows(payload: Mapping[str, Any], key: str, width: int, node: str) -> list[list[Any]]:
    """Return payload[key] checked to be a list of lists of `width` items."""
    rows = payload.get(key)
    if not isinstance(rows, list):
        raise malformed(node, f"{key!r} is not a list")
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise malformed(node, f"an entry of {key!r} does not have {width} items")
    return rows


@dataclass(frozen=True)
class Moments:
    """n, mean and M2 (the sum of squared deviations from the mean) of one set of values."""

    n: int
    mean: float | None
    m2: float

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (ddof=1); None when n < 2."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n >= 2 else None


def pool(parts: Iterable[Moments]) -> Moments:
    """Return the moments of the union of disjoint sets (Chan et al.'s parallel formula).

    mean = sum(n_i mean_i) / n and M2 = sum(M2_i + n_i (mean_i - mean)^2): exact, and
    stable because each part's M2 was formed from deviations about its own mean.
    """
    parts = [p for p in parts if p.n > 0]
    n = sum(p.n for p in parts)
    if n == 0:
        return Moments(0, None, 0.0)
    mean = math.fsum(p.n * p.mean for p in parts if p.mean is not None) / n
    m2 = math.fsum(p.m2 + p.n * (p.mean - mean) ** 2 for p in parts if p.mean is not None)
    return Moments(n, mean, m2)
