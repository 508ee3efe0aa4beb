"""The contract every analysis in the catalogue fulfils, and the types it exchanges.

An analysis has four parts (../DESIGN.md): parameter validation, local computation at
the agent, the disclosure check of its output at the agent, and the combination of the
nodes' checked outputs at the coordinator. The client also asks it to turn a payload
into a pandas DataFrame.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from fedtre.disclosure import DisclosurePolicy

# Declared column types a TRE may give a column in its agent config.
COLUMN_TYPES = ("integer", "float", "string", "boolean", "date")
NUMERIC_TYPES = frozenset({"integer", "float"})
CATEGORICAL_TYPES = frozenset({"integer", "string", "boolean"})


class Outcome(enum.StrEnum):
    """What became of one node's output (mirrors fedtre.v1.Outcome)."""

    RELEASED = "released"
    SUPPRESSED = "suppressed"
    BLOCKED = "blocked"
    REFUSED = "refused"
    FAILED = "failed"
    # Waiting for the TRE's output checker; nothing has left the agent yet.
    HELD = "held"


@dataclass(frozen=True)
class DatasetSchema:
    """A dataset as a node declares it: its name and analysable columns with their types."""

    name: str
    columns: Mapping[str, str]


@dataclass(frozen=True)
class DataSource:
    """Where an agent computes: an engine and a Core selectable exposing the declared columns.

    `table.c` holds exactly the declared columns; analyses build aggregate SQL on it so
    the TRE's own engine does the work and no rows are loaded into Python.
    """

    engine: sa.Engine
    table: sa.FromClause
    schema: DatasetSchema


@dataclass(frozen=True)
class RuleResult:
    """One disclosure rule applied to one output."""

    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class NodeOutput:
    """A node's checked output: only `payload` may ever leave the agent.

    payload is JSON-compatible and must survive a round trip through
    google.protobuf.Struct (numbers come back as floats, keys as strings).

    check() returns RELEASED, SUPPRESSED or BLOCKED. A failed rule named "review" among
    `rules` asks the agent to hold the output for the TRE's output checker instead of
    releasing it (the agent then reports HELD and sends the payload only once approved).
    """

    outcome: Outcome
    payload: dict[str, Any]
    rules: tuple[RuleResult, ...] = field(default_factory=tuple)
    error: str = ""


class Analysis(ABC):
    """One entry of the catalogue. Instances are stateless."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return normalised parameters; raise InvalidRequest naming what is wrong.

        Checks shape only (no dataset knowledge): required keys, unknown keys, filter syntax.
        """

    @abstractmethod
    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        """Return every problem of validated params against one node's declared columns."""

    @abstractmethod
    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        """Run at the agent: return the raw local aggregate (never sent unchecked)."""

    @abstractmethod
    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Run at the agent: apply the disclosure policy and return what may be released."""

    @abstractmethod
    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        """Run at the coordinator: combine the nodes' outputs into one JSON-compatible result."""

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the filter selecting the records an output describes (None: every record).

        The agent's differencing protection compares these cohorts between outputs. The
        default is the validated "filter" parameter; an analysis that ignores some of the
        filter's records (a summary ignores NULLs of its column) narrows it.
        """
        filter_ = self.validate(params).get("filter")
        return dict(filter_) if filter_ is not None else None

    def universe_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the cohort filter of the same output without the researcher's filter."""
        return self.cohort_filter({k: v for k, v in params.items() if k != "filter"})

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return a combined or node payload as a DataFrame, or None when it is not tabular."""
        return None
