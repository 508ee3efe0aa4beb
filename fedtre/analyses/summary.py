"""The summary analysis: n, mean and sample sd of a numeric column, overall or by group.

Payloads (numbers are floats after a Struct round trip; combine casts n back to int):

- node:     {"column": col, "by": col | null,
             "groups": [[label, n | null, mean | null, sd | null], ...]}
  n counts the non-missing values of `column`; sd is the sample sd (ddof=1), null when
  n < 2. Ungrouped ("by": null) there is one group, labelled null. A group with n below
  the threshold, or whose total is dominated (NK or p% rule), is withheld whole, label
  included (the label alone would say the group exists), and counted in
  "hidden": {"groups": k}; when exactly one group would be withheld, the smallest other
  group is withheld too (secondary suppression), so subtracting the released groups
  from an ungrouped summary yields only a blend of two. A group with n - 1 below the
  threshold keeps n and mean and withholds sd: [label, n, mean, null].
- combined: node shape plus
             "withheld": [[label, [node, ...]], ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}
  Included nodes are those whose outcome is RELEASED or SUPPRESSED. Each group is
  pooled exactly over them (Chan et al.); a group absent at a node has n = 0 there. A
  group is null when a node withheld it, or when the node hid groups and did not report
  this one (its part there is unknown); a BLOCKED node withheld every group, so then
  every group is null. A pooled sd is null when a node withheld its sd of that group
  (its n and mean still pool). REFUSED, FAILED and HELD nodes are left out, listed
  under "excluded".

n is rounded like every released count (so a summary cannot undo the rounding of a
count of the same cohort); mean and sd are released as computed. Pooling weights each
node by its released n, so under rounding the pooled mean and sd are close to, not
exactly, the pooled data's; with rounding_base = 1 they are exact. Minimum and maximum
are never released.

Local computation is three aggregate queries, so no row reaches Python: query 1 gives
each group's count, mean and minimum; query 2 joins those means back to the rows
(null-safe on the group) and sums squared deviations, the numerically stable two-pass
variance; query 3 ranks values within each group (a window function) and returns each
group's largest few, for the dominance rules. Minimum and top values never leave the
agent.
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
    RuleResult,
)
from fedtre.analyses.contributors import PER_GROUP_MAX, top_values_by_group
from fedtre.analyses.design import complete_cases
from fedtre.analyses.labels import category_label, label_key
from fedtre.analyses.params import (
    check_keys,
    column_param,
    column_problems,
    complete_cohort,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import (
    Moments,
    as_count,
    as_float,
    as_label,
    as_rows,
    hiding_nodes,
    partition,
    pool,
)
from fedtre.disclosure import distributions, dominance, rules
from fedtre.disclosure.policy import MAX_DOMINANCE_N
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

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's records with a non-missing `column`: the records the summary describes."""
        p = self.validate(params)
        return complete_cohort(p["filter"], [p["column"]])

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
        value = sa.cast(column, sa.Double)
        conditions = complete_cases(table, [p["column"]], p["filter"])
        key = table.c[p["by"]] if p["by"] else None
        keys = [key] if key is not None else []

        firsts = (
            sa.select(*keys, sa.func.count(column), sa.func.avg(value), sa.func.min(value))
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
            if len(first_rows) <= PER_GROUP_MAX:
                seconds = _centred_on_known_means(value, keys, conditions, first_rows)
            m2_by_key = {tuple(row[:-1]): row[-1] for row in conn.execute(seconds)}
            tops_by_key = top_values_by_group(
                conn,
                value,
                keys,
                conditions,
                limit=MAX_DOMINANCE_N,
                groups=[tuple(row[:-3]) for row in first_rows],
            )

        by_type = source.schema.columns.get(p["by"] or "", "")
        groups: dict[str | None, Moments] = {}
        tops: dict[str | None, list[float]] = {}
        minima: dict[str | None, float | None] = {}
        for row in first_rows:
            raw_key, n, mean, low = tuple(row[:-3]), int(row[-3]), row[-2], row[-1]
            m2 = m2_by_key.get(raw_key)
            part = Moments(n, None if mean is None else float(mean), float(m2 or 0.0))
            label = category_label(raw_key[0], by_type) if key is not None else None
            # Two raw values may share a label (1 and 1.0): pool them.
            groups[label] = pool([groups[label], part]) if label in groups else part
            merged = tops.get(label, []) + tops_by_key.get(raw_key, [])
            tops[label] = sorted(merged, reverse=True)[:MAX_DOMINANCE_N]
            lows = [v for v in (minima.get(label), low) if v is not None]
            minima[label] = float(min(lows)) if lows else None
        ordered = sorted(groups, key=label_key)
        return {
            "groups": [
                [g, groups[g].n, groups[g].mean, groups[g].m2, tops[g], minima[g]] for g in ordered
            ]
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Withhold small or dominated groups whole, and sd where n - 1 is below threshold."""
        p = self.validate(params)
        column = p["column"]
        groups = [
            (row[0], Moments(int(row[1]), row[2], float(row[3])), row[4], row[5])
            for row in raw["groups"]
        ]
        sizes = rules.check_group_sizes(
            [m.n for _, m, _, _ in groups], policy, column=column, grouped=p["by"] is not None
        )
        verdicts = [
            dominance.judge_group(top, m.n * (m.mean or 0.0), low, policy)
            for _, m, top, low in groups
        ]
        dominated = [v.dominated for v in verdicts]
        keep = [big and not small for big, small in zip(sizes.released, dominated, strict=True)]
        secondary = _secondary_group(groups, keep) if p["by"] is not None else None
        if secondary is not None:
            keep[secondary] = False
        t = policy.threshold
        released: list[list[Any]] = []
        sd_withheld = 0
        for (label, m, _, _), kept in zip(groups, keep, strict=True):
            if not kept:
                continue  # withheld whole, label included: it would say the group exists
            sd = m.sd
            if sd is not None and m.n - 1 < t:
                sd, sd_withheld = None, sd_withheld + 1
            released.append([label, rules.apply_rounding(m.n, policy), m.mean, sd])
        checked: list[RuleResult] = list(sizes.rules)
        checked.append(_secondary_rule(secondary is not None))
        checked.append(_sd_rule(sd_withheld, t, column))
        if policy.dominance_on:
            judged = [v for v, ok in zip(verdicts, sizes.released, strict=True) if ok]
            checked += dominance.dominance_rules(judged, policy, what=f"the mean of {column!r}")
        checked.append(rules.rounding_result(policy))
        checked.append(distributions.EXTREMES_RULE)
        hidden = len(groups) - len(released)
        outcome = (
            rules.outcome_for(released=len(released), withheld=hidden + sd_withheld)
            if groups
            else sizes.outcome
        )
        payload: dict[str, Any] = {"column": column, "by": p["by"], "groups": released}
        if outcome == Outcome.BLOCKED:
            payload["groups"] = []  # nothing leaves a blocked output
        elif hidden:
            payload["hidden"] = {"groups": hidden}
        return NodeOutput(outcome, payload, tuple(checked))

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        parts: dict[str | None, list[Moments]] = {}
        withheld: dict[str | None, list[str]] = {}
        sd_withheld: set[str | None] = set()
        for node, payload in part.included.items():
            for label, n, mean, sd in as_rows(payload, "groups", 4, node):
                label = as_label(label, node, "a group label")
                count = as_count(n, node, "a group n")
                mean_f = as_float(mean, node, "a group mean")
                if count is None or (mean_f is None and count > 0):
                    withheld.setdefault(label, []).append(node)
                    continue
                sd_f = as_float(sd, node, "a group sd")
                if sd_f is None and count >= 2:
                    # the node withheld this sd (n - 1 below its threshold): so is the pooled sd
                    sd_withheld.add(label)
                m2 = sd_f * sd_f * (count - 1) if sd_f is not None and count >= 2 else 0.0
                parts.setdefault(label, []).append(Moments(count, mean_f, m2))
        if part.blocked:
            for label in set(parts) | set(withheld):
                withheld.setdefault(label, []).extend(part.blocked)
        # A node that hid groups may hold a withheld one at any label it did not report.
        for node, reported in hiding_nodes(part.included, "groups", _reported_groups).items():
            for label in set(parts) - reported:
                withheld.setdefault(label, []).append(node)
        result_groups: list[list[Any]] = []
        for label in sorted(set(parts) | set(withheld), key=label_key):
            if label in withheld:
                result_groups.append([label, None, None, None])
            else:
                pooled = pool(parts[label])
                sd = None if label in sd_withheld else pooled.sd
                result_groups.append([label, pooled.n, pooled.mean, sd])
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


def _reported_groups(node: str, payload: Mapping[str, Any]) -> set[str | None]:
    return {as_label(g[0], node, "a group label") for g in as_rows(payload, "groups", 4, node)}


def _secondary_group(groups: list[Any], keep: list[bool]) -> int | None:
    """The group to withhold besides a single withheld one, or None.

    With one group withheld, an ungrouped summary of the same cohort gives its n and
    mean by subtraction; withholding the smallest other group too leaves only a blend.
    """
    if keep.count(False) != 1 or keep.count(True) < 1:
        return None
    return min((i for i, k in enumerate(keep) if k), key=lambda i: groups[i][1].n)


def _secondary_rule(applied: bool) -> RuleResult:
    if applied:
        return RuleResult(
            rules.SECONDARY,
            False,
            "one more group withheld so that the withheld group cannot be recovered by "
            "subtracting the others from an ungrouped summary",
        )
    return RuleResult(rules.SECONDARY, True, "no single withheld group to protect")


def _sd_rule(withheld: int, t: int, column: str) -> RuleResult:
    if withheld:
        return RuleResult(
            rules.SD_THRESHOLD,
            False,
            f"{withheld} {'group has' if withheld == 1 else 'groups have'} n - 1 below {t}; "
            f"the standard deviation of {column!r} is withheld there (n and mean are released)",
        )
    return RuleResult(
        rules.SD_THRESHOLD, True, f"every released standard deviation rests on n - 1 >= {t}"
    )


def _centred_on_known_means(
    value: sa.ColumnElement[Any],
    keys: list[sa.ColumnElement[Any]],
    conditions: list[sa.ColumnElement[bool]],
    first_rows: Any,
) -> sa.Select[Any]:
    """The second pass with each group's mean from the first written into the SQL.

    One scan and no join to the grouped means, which SQLite took 3x a scan to do at ten
    million rows (bench/README.md); for the few groups PER_GROUP_MAX allows.
    """
    means = [(tuple(row[:-3]), row[-2]) for row in first_rows if row[-2] is not None]
    centre: sa.ColumnElement[Any]
    if keys:
        whens = [
            (
                keys[0].is_(None) if g[0] is None else keys[0] == g[0],
                sa.literal(float(m), sa.Double),
            )
            for g, m in means
        ]
        centre = sa.case(*whens, else_=sa.null()) if whens else sa.null()
    else:
        centre = sa.literal(float(means[0][1]) if means else 0.0, sa.Double)
    deviation = value - centre
    return sa.select(*keys, sa.func.sum(deviation * deviation)).where(*conditions).group_by(*keys)
