"""A TRE's disclosure thresholds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedtre.errors import InvalidRequest

DEFAULT_THRESHOLD = 10
DEFAULT_ROUNDING_BASE = 5


@dataclass(frozen=True)
class DisclosurePolicy:
    """Thresholds applied by an agent to every output.

    threshold: a released count (or the n behind a summary) must be at least this.
    rounding_base: released counts are rounded to the nearest multiple of this (1 = exact).
    """

    threshold: int = DEFAULT_THRESHOLD
    rounding_base: int = DEFAULT_ROUNDING_BASE

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise InvalidRequest("policy threshold must be a whole number, e.g. threshold = 10")
        if self.threshold < 0:
            raise InvalidRequest("policy threshold must be 0 or more (the default is 10)")
        if isinstance(self.rounding_base, bool) or not isinstance(self.rounding_base, int):
            raise InvalidRequest("policy rounding_base must be a whole number, e.g. 5")
        if self.rounding_base < 1:
            raise InvalidRequest("policy rounding_base must be 1 (no rounding) or more")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DisclosurePolicy:
        """Build a policy from a config mapping; raises InvalidRequest on unknown keys."""
        known = {"threshold", "rounding_base"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidRequest(
                f"unknown disclosure policy setting(s) {unknown}; known settings: {sorted(known)}"
            )
        return cls(**dict(values))
