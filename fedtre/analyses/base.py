"""The contract every analysis in the catalogue fulfils, and the types it exchanges.

An analysis has four parts (../DESIGN.md): parameter validation, local computation at
the agent, the disclosure check of its output at the agent, and the combination of the
nodes' checked outputs at the coordinator. The client also asks it to turn a payload
into a pandas DataFrame.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from fedtre.catalogue.description import ColumnDescription, DatasetDescription

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from fedtre.disclosure import DisclosurePolicy
    from fedtre.disclosure.differencing import Grouping, Labels

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
    """A dataset as a node declares it: its name and analysable columns with their types.

    grids: for numeric columns whose bounds may be released (histogram, quantiles,
    survival times), the finest grid width the TRE allows; a released bound is always a
    multiple of it. A column without a grid has no released bounds.

    description and column_descriptions: what the TRE's operator wrote about the dataset
    and its columns (fedtre.catalogue.description), for the catalogue; never from values.
    """

    name: str
    columns: Mapping[str, str]
    grids: Mapping[str, float] = field(default_factory=dict)
    description: DatasetDescription | None = None
    column_descriptions: Mapping[str, ColumnDescription] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSource:
    """Where an agent computes: an engine and a Core selectable exposing the declared columns.

    `table.c` holds exactly the declared columns; analyses build aggregate SQL on it so
    the TRE's own engine does the work and no rows are loaded into Python. record_key is
    each record's cell key (0..255) as a SQL expression over the table, keyed by the TRE's
    secret (fedtre.disclosure.cellkey.keyed_source), and record_id each record's id for
    the differencing memory; None until the agent sets them. refresh, when set, brings
    the table up to date with the data before a task (a file dataset's keyed extract).
    """

    engine: sa.Engine
    table: sa.FromClause
    schema: DatasetSchema
    record_key: sa.ColumnElement[int] | None = None
    record_id: sa.ColumnElement[int] | None = None
    refresh: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RuleResult:
    """One disclosure rule applied to one output."""

    rule: str
    passed: bool
    detail: str
    # The TRE's policy setting the rule applied, e.g. "threshold=10" (release.rule_setting);
    # policy, never data; "" when the rule has no setting.
    setting: str = ""


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


def by_groupings(by: str | None) -> list[Grouping]:
    """Return the groupings of an output with one group per level of `by` (none: [])."""
    return [(by,)] if by else []


def released_by_groups(
    by: str | None, groups: Sequence[Sequence[Any]]
) -> set[tuple[Grouping, Labels]]:
    """Return the released groups of a payload's [label, value, ...] rows (value null:
    withheld), as Analysis.released_groups does, for an output grouped by `by`."""
    if not by:
        return set()
    return {((by,), (g[0],)) for g in groups if g[1] is not None}


class Analysis(ABC):
    """One entry of the catalogue. Instances are stateless."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Every value of the node payload, by dotted path ("groups.*.1"; * is a list index),
    # with its kind (fedtre.disclosure.release.Kind). The release stage refuses a value
    # whose path is not here, or that did not pass its rule for that kind.
    released_fields: ClassVar[Mapping[str, str]] = {}
    # Parameters that take a list: the CLI reads `--param covariates=age` as ["age"].
    list_params: ClassVar[frozenset[str]] = frozenset()

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

    def groupings(self, params: Mapping[str, Any]) -> list[Grouping]:
        """Return the groupings whose groups the output releases separately (none: []): column
        sets, or value ranges (fedtre.disclosure.differencing.Bins, Edges).

        The differencing memory remembers each group's records as well as the cohort's, so
        two outputs that differ by a few records inside one group are caught even when
        padding elsewhere makes their cohorts differ by many.
        """
        return []

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[Grouping, Labels]]:
        """Return the groups a checked payload releases: (grouping, labels) pairs, for the
        groupings() of these params (none: an empty set)."""
        return set()

    def universe_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the cohort filter of the same output without the researcher's filter."""
        return self.cohort_filter({k: v for k, v in params.items() if k != "filter"})

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return a combined or node payload as a DataFrame, or None when it is not tabular."""
        return None
