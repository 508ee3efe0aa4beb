"""The summary analysis: n, mean and sample sd of a numeric column, overall or by group.

Payloads (numbers are floats after a Struct round trip; combine casts n back to int):

- node:     {"column": col, "by": col | null,
             "groups": [[label, n | null, mean | null, sd | null], ...]}
  n counts the non-missing values of `column`; sd is the sample sd (ddof=1), null when
  n < 2. Ungrouped ("by": null) there is one group, labelled null. A group with n below
  the threshold is withheld whole: [label, null, null, null].
- combined: node shape plus
             "withheld": [[label, [node, ...]], ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}
  Included nodes are those whose outcome is RELEASED or SUPPRESSED. Each group is
  pooled exactly over them (Chan et al.); a group absent at a node has n = 0 there. A
  group is null when a node withheld it; a BLOCKED node withheld every group, so then
  every group is null. REFUSED and FAILED nodes are left out, listed under "excluded".

n, mean and sd are released unrounded: pooling needs each node's exact weight n and
moments, and rounding them would bias the pooled mean and sd. (A later rule engine
must weigh the differencing risk of an exact n beside rounded counts.)

Local computation is two aggregate queries, so no row reaches Python: query 1 gives
each group's count and mean; query 2 joins those means back to the rows (null-safe on
the group) and sums squared deviations, the numerically stable two-pass variance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fedtre.analyses.base import (
    CATEGORICAL_TYPES,
    NUMERIC_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
)
from fedtre.analyses.filters import compile_filter
from fedtre.analyses.labels import category_label, label_key
from fedtre.analyses.params import (
    check_keys,
    column_param,
    column_problems,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import Moments, as_count, as_float, as_label, as_rows, partition, pool
from fedtre.disclosure import rules
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"column": "bmi", "by": "sex"}'
UNGROUPED_LABEL = "all"


class SummaryAnalysis(Analysis):
    """n, mean and sample standard deviation of a numeric column, optionally by group."""

    name = "summary"
    description = "n, mean and sample sd of a numeric column, overall or by a categorical column."

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("column",),
            optional=("by", "filter"),
            example=_EXAMPLE,
        )
        column = column_param(p, "column", analysis=self.name, example=_EXAMPLE)
        if column is None:
            raise InvalidRequest(f"summary needs a numeric 'column', e.g. {_EXAMPLE}")
        by = column_param(p, "by", analysis=self.name, example=_EXAMPLE)
        if by == column:
            raise InvalidRequest(
                f"summary 'column' and 'by' are both {column!r}; group by a different column"
            )
        return {"column": column, "by": by, "filter": filter_param(p)}

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        return (
            column_problems(p["column"], role="summary", schema=schema, allowed=NUMERIC_TYPES)
            + column_problems(p["by"], role="by", schema=schema, allowed=CATEGORICAL_TYPES)
            + schema_filter_problems(p["filter"], schema)
        )

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table = source.table
        column = table.c[p["column"]]
        value = sa.cast(column, sa.Float)
        conditions = [column.is_not(None)]
        if p["filter"] is not None:
            conditions.append(compile_filter(p["filter"], table))
        key = table.c[p["by"]] if p["by"] else None
        keys = [key] if key is not None else []

        firsts = (
            sa.select(*keys, sa.func.count(column), sa.func.avg(value))
            .where(*conditions)
            .group_by(*keys)
        )
        means = (
            sa.select(*(k.label("g") for k in keys), sa.func.avg(value).label("m"))
            .where(*conditions)
            .group_by(*keys)
            .subquery()
        )
        on = key.is_not_distinct_from(means.c.g) if key is not None else sa.true()
        deviation = value - means.c.m
        seconds = (
            sa.select(*keys, sa.func.sum(deviation * deviation))
            .select_from(table.join(means, on))
            .where(*conditions)
            .group_by(*keys)
        )
        with source.engine.connect() as conn:
            first_rows = conn.execute(firsts).all()
            m2_by_key = {tuple(row[:-1]): row[-1] for row in conn.execute(seconds)}

        by_type = source.schema.columns.get(p["by"] or "", "")
        groups: dict[str | None, Moments] = {}
        for row in first_rows:
            raw_key, n, mean = tuple(row[:-2]), int(row[-2]), row[-1]
            m2 = m2_by_key.get(raw_key)
            part = Moments(n, None if mean is None else float(mean), float(m2 or 0.0))
            label = category_label(raw_key[0], by_type) if key is not None else None
            # Two raw values may share a label (1 and 1.0): pool them.
            groups[label] = pool([groups[label], part]) if label in groups else part
        ordered = sorted(groups, key=label_key)
        return {"groups": [[g, groups[g].n, groups[g].mean, groups[g].m2] for g in ordered]}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        p = self.validate(params)
        groups = [(label, Moments(int(n), mean, float(m2))) for label, n, mean, m2 in raw["groups"]]
        checked = rules.check_group_sizes(
            [m.n for _, m in groups], policy, column=p["column"], grouped=p["by"] is not None
        )
        released = [
            [label, m.n, m.mean, m.sd] if ok else [label, None, None, None]
            for (label, m), ok in zip(groups, checked.released, strict=True)
        ]
        if checked.outcome == Outcome.BLOCKED:
            released = []  # nothing leaves a blocked output, not even which groups exist
        payload = {"column": p["column"], "by": p["by"], "groups": released}
        return NodeOutput(checked.outcome, payload, checked.rules)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        parts: dict[str | None, list[Moments]] = {}
        withheld: dict[str | None, list[str]] = {}
        for node, payload in part.included.items():
            for label, n, mean, sd in as_rows(payload, "groups", 4, node):
                label = as_label(label, node, "a group label")
                count = as_count(n, node, "a group n")
                if count is None:
                    withheld.setdefault(label, []).append(node)
                    continue
                mean_f = as_float(mean, node, "a group mean")
                sd_f = as_float(sd, node, "a group sd")
                m2 = sd_f * sd_f * (count - 1) if sd_f is not None and count >= 2 else 0.0
                parts.setdefault(label, []).append(Moments(count, mean_f, m2))
        if part.blocked:
            for label in set(parts) | set(withheld):
                withheld.setdefault(label, []).extend(part.blocked)
        result_groups: list[list[Any]] = []
        for label in sorted(set(parts) | set(withheld), key=label_key):
            if label in withheld:
                result_groups.append([label, None, None, None])
            else:
                pooled = pool(parts[label])
                result_groups.append([label, pooled.n, pooled.mean, pooled.sd])
        return {
            "column": p["column"],
            "by": p["by"],
            "groups": result_groups,
            "withheld": [[g, sorted(withheld[g])] for g in sorted(withheld, key=label_key)],
            "nodes": part.nodes,
        }

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return one row per group (index named after `by`; ungrouped, one row "all").

        n is a nullable integer (Int64), mean and sd floats; <NA>/NaN mark a withheld group
        or an sd of n < 2.
        """
        # Imported here: only the client makes frames; the services need not load pandas.
        import numpy as np
        import pandas as pd

        p = self.validate(params)
        groups = as_rows(payload, "groups", 4, "(payload)")
        if p["by"] is None:
            index = pd.Index([UNGROUPED_LABEL] * len(groups), dtype=object)
        else:
            index = pd.Index([g[0] for g in groups], dtype=object, name=p["by"])

        def column(i: int) -> list[float]:
            return [np.nan if g[i] is None else float(g[i]) for g in groups]

        frame = pd.DataFrame({"n": column(1), "mean": column(2), "sd": column(3)}, index=index)
        return frame.astype({"n": "Int64"})
