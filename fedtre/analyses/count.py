"""The count analysis: how many records match an optional filter.

Payloads (after a Struct round trip numbers are floats; combine casts counts back):

- node:     {"n": int | null}   n as the release stage lets it leave (fedtre.disclosure.
            release.count): withheld (null) below the threshold, otherwise perturbed by the
            cell-key method with the cell key of exactly the counted records (the same
            cohort always gets the same answer), or rounded if the TRE chose rounding
- combined: {"n": int | null, "withheld_by": [node, ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}}

Included nodes are those whose outcome is RELEASED or SUPPRESSED. The combined n is
their sum; it is null, never a partial sum, when a node withheld its count (a BLOCKED
node withholds everything; "withheld_by" names them) or when no node is included.
REFUSED and FAILED nodes are left out and listed under "excluded". The sum is of
perturbed counts, so it can differ from the pooled count by up to (number of nodes) x
noise_deviation (with rounding: (number of nodes) x base / 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fedtre.analyses.base import (
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
    RuleResult,
)
from fedtre.analyses.filters import compile_filter
from fedtre.analyses.params import check_keys, filter_param, raise_problems, schema_filter_problems
from fedtre.analyses.pooling import as_count, malformed, partition
from fedtre.disclosure import cellkey, release, rules

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"filter": {"col": "age", "op": ">=", "value": 40}}'


class CountAnalysis(Analysis):
    """Number of records, optionally restricted by a filter."""

    name = "count"
    description = "Number of records, optionally restricted by a filter."
    released_fields = {"n": release.Kind.COUNT}

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params, analysis=self.name, required=(), optional=("filter",), example=_EXAMPLE
        )
        return {"filter": filter_param(p)}

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        return schema_filter_problems(self.validate(params)["filter"], schema)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        # The count and the cell key of exactly the counted records, in one query.
        key = cellkey.cell_key_sum(cellkey.record_key_of(source))
        query = sa.select(sa.func.count(), key).select_from(source.table)
        if p["filter"] is not None:
            query = query.where(compile_filter(p["filter"], source.table))
        with source.engine.connect() as conn:
            n, cell_key = conn.execute(query).one()
        return {"n": int(n), "key": int(cell_key or 0)}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        n = int(raw["n"])
        value = release.count(n, int(raw["key"]), policy, zero_ok=policy.threshold == 0)
        t = policy.threshold
        if t == 0:
            threshold = RuleResult(rules.THRESHOLD, True, "no minimum count applies (threshold 0)")
        elif value is not None:
            threshold = RuleResult(rules.THRESHOLD, True, f"the count has at least {t} records")
        else:
            threshold = RuleResult(
                rules.THRESHOLD, False, f"the count has fewer than {t} records, so it is withheld"
            )
        outcome = Outcome.RELEASED if value is not None else Outcome.BLOCKED
        return NodeOutput(outcome, {"n": value}, (threshold, rules.count_rule(policy)))

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        part = partition(outputs)
        total = 0
        withheld: list[str] = []
        for node, payload in part.included.items():
            if "n" not in payload:
                raise malformed(node, "it has no 'n'")
            n = as_count(payload["n"], node, "n")
            if n is None:
                withheld.append(node)
            else:
                total += n
        withheld += part.blocked
        n_combined = total if part.included and not withheld else None
        return {"n": n_combined, "withheld_by": sorted(withheld), "nodes": part.nodes}

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return one row "all" with n (nullable Int64: <NA> when withheld), as summary does."""
        import pandas as pd

        if "n" not in payload:
            return None
        n = payload["n"]
        values = pd.array([None if n is None else int(n)], dtype="Int64")
        return pd.DataFrame({"n": values}, index=pd.Index(["all"], dtype=object))
