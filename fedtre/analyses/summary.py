"""The summary analysis: n, mean and sample sd of a numeric column, overall or by group.

Payloads (numbers are floats after a Struct round trip; combine casts n back to int):

- node:     {"column": col, "by": col | null,
             "groups": [[label, n | null, mean | null, sd | null], ...]}
  Every value passes the release stage (fedtre.disclosure.release; released_fields):
  n is a count released through release.count with the cell key of exactly the group's
  records (the same query counts them), so it carries the cell-key noise (or the
  rounding) of every count of the same records; mean and sd are magnitudes released
  through release.mean_and_sd: the group's exact total and sum of squared deviations
  carry consistent noise of at most policy.magnitude_noise times the group's largest
  |value| (for the total) and its largest |value - mean| squared (for the squared
  deviations), both computed in the engine and never released; the mean divides the
  noisy total by the group's true n. The same records always give the same released
  values (the noise is fixed by the cell key), so repeats cannot be averaged; and since
  mean x n is not a whole number for any n, a released mean of integer data no longer
  tells which n near the perturbed count is the true one.
  n counts the non-missing values of `column`; sd is the sample sd (ddof=1), null when
  n < 2. Ungrouped ("by": null) there is one group, labelled null. A group whose count
  is withheld (n below the threshold), or whose total is dominated (NK or p% rule), is
  withheld whole, label included (the label alone would say the group exists); the
  payload says nothing of how many groups were withheld (only the outcome, SUPPRESSED,
  says that something was). A group with n - 1 below the threshold keeps n and mean and
  withholds sd: [label, n, mean, null].

  Secondary suppression: when exactly one group would be withheld, the smallest other
  group is withheld too. It still matters under noise: subtracting the released groups
  from an ungrouped summary of the same cohort estimates the withheld group's n and
  total with only the sum of the outputs' noises (count noise of variance
  noise_variance per count; total noise of at most magnitude_noise x the largest |value|
  of each), which for a group of one or two people, or one dominated by a single large
  value, can still narrow that person's value to a useful range, and with
  magnitude_noise = 0 (a TRE may choose it) the subtraction is exact again. Withholding
  a second group leaves only a blend of two, at least one of them of at least
  `threshold` records.
- combined: node shape plus
             "withheld": [[label, [node, ...]], ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}
  Included nodes are those whose outcome is RELEASED or SUPPRESSED. Each group is
  pooled over them (Chan et al.) from the released n, mean and sd; a group absent at a
  node has n = 0 there. A group is null when a node may have withheld it: a SUPPRESSED
  node may hold a withheld group at any label it did not report (it does not say which
  or how many), and a BLOCKED node withheld every group, so then every group is null.
  A pooled sd is null when a node withheld its sd of that group (its n and mean still
  pool). REFUSED, FAILED and HELD nodes are left out, listed under "excluded".

Pooling weights each node by its released (perturbed or rounded) n and uses the noisy
means and sds, so the pooled n, mean and sd are close to, not exactly, the pooled
data's: approximate by design. With perturbation = "rounding", rounding_base = 1 and
magnitude_noise = 0 they are exact. Minimum and maximum are never released.

Local computation is three aggregate queries, so no row reaches Python: query 1 gives
each group's count, mean, minimum, maximum and cell key (SUM(record key) mod 256);
query 2 sums squared deviations from each group's mean, the numerically stable two-pass
variance; query 3 ranks values within each group (a window function) and returns each
group's largest few, for the dominance rules. Minimum, maximum, the noise scales and
top values never leave the agent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

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
    by_groupings,
    released_by_groups,
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
    partition,
    pool,
)
from fedtre.disclosure import cellkey, distributions, dominance, release, rules
from fedtre.disclosure.policy import MAX_DOMINANCE_N
from fedtre.disclosure.release import Kind
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy
    from fedtre.disclosure.differencing import Grouping, Labels

_EXAMPLE = '{"column": "bmi", "by": "sex"}'
UNGROUPED_LABEL = "all"
# The rule family of cell-key perturbation (release.PLAIN_WORDS).


@dataclass(frozen=True)
class _Group:
    """One group as computed at the agent (never released as such)."""

    label: str | None
    moments: Moments
    top: list[float]
    low: float | None
    high: float | None
    key: int

    @classmethod
    def from_raw(cls, row: Sequence[Any]) -> _Group:
        label, n, mean, m2, top, low, high, key = row
        moments = Moments(int(n), None if mean is None else float(mean), float(m2 or 0.0))
        return cls(label, moments, list(top), low, high, int(key))

    def raw(self) -> list[Any]:
        m = self.moments
        return [self.label, m.n, m.mean, m.m2, self.top, self.low, self.high, self.key]

    @property
    def scale(self) -> float:
        """The largest |value|: the scale of the total's noise."""
        return max((abs(v) for v in (self.low, self.high) if v is not None), default=0.0)

    @property
    def dev_scale(self) -> float:
        """The largest |value - mean|: the scale of the squared deviations' noise."""
        mean = self.moments.mean
        if mean is None or self.low is None or self.high is None:
            return 0.0
        return max(self.high - mean, mean - self.low, 0.0)

    def merged(self, other: _Group) -> _Group:
        """The union of two disjoint groups that share a label (raw 1 and 1.0)."""
        lows = [v for v in (self.low, other.low) if v is not None]
        highs = [v for v in (self.high, other.high) if v is not None]
        return _Group(
            self.label,
            pool([self.moments, other.moments]),
            sorted(self.top + other.top, reverse=True)[:MAX_DOMINANCE_N],
            min(lows) if lows else None,
            max(highs) if highs else None,
            cellkey.combine_keys([self.key, other.key]),
        )


class SummaryAnalysis(Analysis):
    """n, mean and sample standard deviation of a numeric column, optionally by group."""

    name = "summary"
    description = "n, mean and sample sd of a numeric column, overall or by a categorical column."
    released_fields: ClassVar[Mapping[str, str]] = {
        "column": Kind.PARAMETER,
        "by": Kind.PARAMETER,
        "groups.*.0": Kind.LABEL,
        "groups.*.1": Kind.COUNT,
        "groups.*.2": Kind.MAGNITUDE,
        "groups.*.3": Kind.MAGNITUDE,
    }

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

    def groupings(self, params: Mapping[str, Any]) -> list[Grouping]:
        """The `by` column: each group's records are remembered like a cohort."""
        return by_groupings(self.validate(params)["by"])

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[Grouping, Labels]]:
        """The groups whose n the payload releases."""
        return released_by_groups(self.validate(params)["by"], payload.get("groups", []))

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        return (
            column_problems(p["column"], role="summary", schema=schema, allowed=NUMERIC_TYPES)
            + column_problems(p["by"], role="by", schema=schema, allowed=CATEGORICAL_TYPES)
            + schema_filter_problems(p["filter"], schema)
        )

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        """Return {"groups": [[label, n, mean, m2, top, min, max, cell key], ...]} (agent only)."""
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table = source.table
        column = table.c[p["column"]]
        value = sa.cast(column, sa.Double)
        conditions = complete_cases(table, [p["column"]], p["filter"])
        key = table.c[p["by"]] if p["by"] else None
        keys = [key] if key is not None else []
        width = len(keys)

        firsts = (
            sa.select(
                *keys,
                sa.func.count(column),
                sa.func.avg(value),
                sa.func.min(value),
                sa.func.max(value),
                cellkey.cell_key_sum(cellkey.record_key_of(source)),
            )
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
            known = [(tuple(row[:width]), row[width + 1]) for row in first_rows]
            if len(first_rows) <= PER_GROUP_MAX:
                seconds = _centred_on_known_means(value, keys, conditions, known)
            m2_by_key = {tuple(row[:-1]): row[-1] for row in conn.execute(seconds)}
            tops_by_key = top_values_by_group(
                conn,
                value,
                keys,
                conditions,
                limit=MAX_DOMINANCE_N,
                groups=[g for g, _ in known],
            )

        by_type = source.schema.columns.get(p["by"] or "", "")
        groups: dict[str | None, _Group] = {}
        for row in first_rows:
            raw_key = tuple(row[:width])
            n, mean, low, high, cell = row[width:]
            label = category_label(raw_key[0], by_type) if key is not None else None
            part = _Group(
                label,
                Moments(
                    int(n),
                    None if mean is None else float(mean),
                    float(m2_by_key.get(raw_key) or 0.0),
                ),
                tops_by_key.get(raw_key, [])[:MAX_DOMINANCE_N],
                None if low is None else float(low),
                None if high is None else float(high),
                int(cell or 0),
            )
            # Two raw values may share a label (1 and 1.0): pool them.
            groups[label] = groups[label].merged(part) if label in groups else part
        return {"groups": [groups[g].raw() for g in sorted(groups, key=label_key)]}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Withhold small or dominated groups whole, and sd where n - 1 is below threshold;
        release every n, mean and sd through the release stage."""
        p = self.validate(params)
        column = p["column"]
        groups = [_Group.from_raw(row) for row in raw["groups"]]
        counts = [
            release.count(g.moments.n, g.key, policy, zero_ok=policy.threshold == 0) for g in groups
        ]
        # A count the release stage withholds is below the threshold (or, with a TRE's
        # own table, perturbed below it): judged as too small.
        sizes = rules.check_group_sizes(
            [g.moments.n if c is not None else 0 for g, c in zip(groups, counts, strict=True)],
            policy,
            column=column,
            grouped=p["by"] is not None,
        )
        verdicts = [
            dominance.judge_group(g.top, g.moments.n * (g.moments.mean or 0.0), g.low, policy)
            for g in groups
        ]
        keep = [big and not v.dominated for big, v in zip(sizes.released, verdicts, strict=True)]
        secondary = _secondary_group(groups, keep) if p["by"] is not None else None
        if secondary is not None:
            keep[secondary] = False
        t = policy.threshold
        released: list[list[Any]] = []
        sd_withheld = 0
        for g, n, kept in zip(groups, counts, keep, strict=True):
            if not kept:
                continue  # withheld whole, label included: it would say the group exists
            m = g.moments
            mean = sd = None
            if m.n > 0 and m.mean is not None:
                mean, sd = release.mean_and_sd(
                    n=m.n,
                    total=m.n * m.mean,
                    sum_sq_dev=m.m2,
                    scale=g.scale,
                    dev_scale=g.dev_scale,
                    key=g.key,
                    policy=policy,
                    slot=column,
                )
            if sd is not None and m.n - 1 < t:
                sd, sd_withheld = None, sd_withheld + 1
            released.append([release.label(g.label), n, mean, sd])
        checked: list[RuleResult] = list(sizes.rules)
        checked.append(_secondary_rule(secondary is not None))
        checked.append(_sd_rule(sd_withheld, t, column))
        if policy.dominance_on:
            judged = [v for v, ok in zip(verdicts, sizes.released, strict=True) if ok]
            checked += dominance.dominance_rules(judged, policy, what=f"the mean of {column!r}")
        checked.append(rules.count_rule(policy))
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
        return NodeOutput(outcome, payload, tuple(checked))

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        parts: dict[str | None, list[Moments]] = {}
        withheld: dict[str | None, list[str]] = {}
        sd_withheld: set[str | None] = set()
        reported: dict[str, set[str | None]] = {}
        for node, payload in part.included.items():
            reported[node] = set()
            for label, n, mean, sd in as_rows(payload, "groups", 4, node):
                label = as_label(label, node, "a group label")
                reported[node].add(label)
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
        # A SUPPRESSED node may hold a withheld group at any label it did not report: it
        # says neither which nor how many, so the pooled value there is unknown.
        for node in sorted(reported):
            if Outcome(outputs[node].outcome) is not Outcome.SUPPRESSED:
                continue
            for label in set(parts) - reported[node]:
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


def _secondary_group(groups: list[_Group], keep: list[bool]) -> int | None:
    """The group to withhold besides a single withheld one, or None.

    With one group withheld, an ungrouped summary of the same cohort gives its n and
    total by subtraction (up to the outputs' noise); withholding the smallest other group
    too leaves only a blend (see the module docstring).
    """
    if keep.count(False) != 1 or keep.count(True) < 1:
        return None
    return min((i for i, k in enumerate(keep) if k), key=lambda i: groups[i].moments.n)


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
    known: Sequence[tuple[tuple[Any, ...], Any]],
) -> sa.Select[Any]:
    """The second pass with each group's mean from the first written into the SQL.

    known: (raw group key, mean) per group. One scan and no join to the grouped means,
    which SQLite took 3x a scan to do at ten million rows (bench/README.md); for the few
    groups PER_GROUP_MAX allows.
    """
    means = [(g, m) for g, m in known if m is not None]
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
