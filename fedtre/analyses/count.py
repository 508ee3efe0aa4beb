"""The count analysis: how many records match an optional filter.

Payloads (after a Struct round trip numbers are floats; combine casts counts back):

- node:     {"n": int | null}   n rounded to the policy's base; null when withheld
- combined: {"n": int | null, "withheld_by": [node, ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}}

Included nodes are those whose outcome is RELEASED or SUPPRESSED. The combined n is
their sum; it is null, never a partial sum, when a node withheld its count (a BLOCKED
node withholds everything; "withheld_by" names them) or when no node is included.
REFUSED and FAILED nodes are left out and listed under "excluded". With
rounding at the nodes the sum is of rounded counts, so it can differ from the rounded
pooled count by up to (number of nodes) x base / 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fedtre.analyses.base import Analysis, DatasetSchema, DataSource, NodeOutput
from fedtre.analyses.filters import compile_filter
from fedtre.analyses.params import check_keys, filter_param, raise_problems, schema_filter_problems
from fedtre.analyses.pooling import as_count, malformed, partition
from fedtre.disclosure import rules

if TYPE_CHECKING:
    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"filter": {"col": "age", "op": ">=", "value": 40}}'


class CountAnalysis(Analysis):
    """Number of records, optionally restricted by a filter."""

    name = "count"
    description = "Number of records, optionally restricted by a filter."

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
        query = sa.select(sa.func.count()).select_from(source.table)
        if p["filter"] is not None:
            query = query.where(compile_filter(p["filter"], source.table))
        with source.engine.connect() as conn:
            n = conn.execute(query).scalar_one()
        return {"n": int(n)}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        checked = rules.check_count(int(raw["n"]), policy)
        return NodeOutput(checked.outcome, {"n": checked.values[0]}, checked.rules)

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
