"""The kaplan_meier analysis: survival curves from pooled event tables, and the log-rank test.

Parameters: `time` (numeric: follow-up time), `event` (integer 0/1 or boolean: 1 = the
event happened, 0 = censored), optional `by` (a categorical column: one curve per level,
NULL its own level, and a log-rank test across them), optional `filter`.

Each node builds its event table in its own SQL engine (GROUP BY the group and the time:
events and censorings at each distinct time) and protects each group's table with
fedtre.disclosure.survival.protect_survival_table: consecutive times are merged into
intervals until every number at risk, event count and censoring count is at least the
threshold (censored may be 0). A group that cannot be protected is withheld (null); if
every group is withheld the output is BLOCKED.

- node payload: {"time", "event", "by", "groups": [[label, [[start, end, at_risk, events,
                 censored], ...] | null], ...]}
- combined: {"time", "event", "by",
             "groups": [[label, {"n", "events", "median", "table": [[time, at_risk,
                         events, censored, survival, std_err, ci_lower, ci_upper], ...]}
                         | null], ...],
             "logrank": {"chi2", "df", "p_value"} | null,
             "withheld": [[label, [node, ...]], ...], "nodes": {...}}

Pooling: each node's interval is read as all of its events and censorings at the
interval's end time (events before censorings, the Kaplan-Meier convention for ties); the
pooled table is the union of these, and the number at risk at a time is every record not
ended before it. Where nodes released exact times (no merging, e.g. threshold 0) this is
exactly the pooled Kaplan-Meier estimate; with merging it is the estimate of the grouped
data, never finer than the nodes released. Standard errors are Greenwood's; the 95%
intervals use the log(-log) transform (lifelines' default). The median is the first time
the survival is at or below 0.5 (null if it never is). The log-rank test compares
observed with expected events in each group over the pooled event times (chi-squared on
groups - 1 degrees of freedom). A group withheld by any node, or any group of a BLOCKED
node, is null in the combined result, and the log-rank test is then null too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
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
from fedtre.analyses.design import complete_cases, finite_or_none, numeric_expr
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
from fedtre.analyses.pooling import as_count, as_float, as_label, as_rows, malformed, partition
from fedtre.disclosure import rules
from fedtre.disclosure.survival import protect_survival_table
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"time": "followup_years", "event": "died", "by": "sex"}'
Z_95 = 1.959963984540054
MAX_GROUPS = 50


class KaplanMeierAnalysis(Analysis):
    """Kaplan-Meier survival curves, optionally by group, with the log-rank test."""

    name = "kaplan_meier"
    description = "Kaplan-Meier survival with 95% CIs and numbers at risk; log-rank across groups."

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("time", "event"),
            optional=("by", "filter"),
            example=_EXAMPLE,
        )
        time = column_param(p, "time", analysis=self.name, example=_EXAMPLE)
        event = column_param(p, "event", analysis=self.name, example=_EXAMPLE)
        by = column_param(p, "by", analysis=self.name, example=_EXAMPLE)
        if time is None or event is None:
            raise InvalidRequest(f"kaplan_meier needs 'time' and 'event' columns, e.g. {_EXAMPLE}")
        if len({time, event, by} - {None}) != (3 if by else 2):
            raise InvalidRequest("kaplan_meier 'time', 'event' and 'by' must be different columns")
        return {"time": time, "event": event, "by": by, "filter": filter_param(p)}

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's records with a time and an event status: those the curves describe."""
        p = self.validate(params)
        return complete_cohort(p["filter"], [p["time"], p["event"]])

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        return (
            column_problems(p["time"], role="time", schema=schema, allowed=NUMERIC_TYPES)
            + column_problems(
                p["event"], role="event", schema=schema, allowed=frozenset({"integer", "boolean"})
            )
            + column_problems(p["by"], role="by", schema=schema, allowed=CATEGORICAL_TYPES)
            + schema_filter_problems(p["filter"], schema)
        )

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table, types = source.table, source.schema.columns
        time = sa.cast(table.c[p["time"]], sa.Double).label("t")
        event = numeric_expr(table, p["event"], types[p["event"]])
        conditions = complete_cases(table, [p["time"], p["event"]], p["filter"])
        keys = [table.c[p["by"]]] if p["by"] else []
        query = (
            sa.select(*keys, time, sa.func.sum(event), sa.func.count())
            .where(*conditions)
            .group_by(*keys, time)
            .order_by(time)
        )
        bad = sa.select(sa.func.count()).where(*conditions, sa.and_(event != 0.0, event != 1.0))
        groups: dict[str | None, dict[float, list[int]]] = {}
        with source.engine.connect() as conn:
            if conn.execute(bad).scalar_one():
                raise InvalidRequest(
                    f"the event column {p['event']!r} has values at this node other than 0 and 1"
                )
            for row in conn.execute(query):
                label = category_label(row[0], types[p["by"]]) if p["by"] else None
                t, d, n = float(row[-3]), int(row[-2] or 0), int(row[-1])
                cell = groups.setdefault(label, {}).setdefault(t, [0, 0])
                cell[0] += d
                cell[1] += n - d
        if len(groups) > MAX_GROUPS:
            raise InvalidRequest(f"'by' has more than {MAX_GROUPS} levels; group it first")
        return {
            "groups": [
                [label, [[t, d, c] for t, (d, c) in sorted(groups[label].items())]]
                for label in sorted(groups, key=label_key)
            ]
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Protect each group's event table; withhold the groups that cannot be protected."""
        p = self.validate(params)
        released: list[list[Any]] = []
        withheld = merged = 0
        for label, rows in raw["groups"]:
            protected = protect_survival_table(
                [(float(t), int(d), int(c)) for t, d, c in rows], policy
            )
            if protected.outcome is Outcome.BLOCKED:
                withheld += 1
                released.append([label, None])
                continue
            merged += protected.outcome is Outcome.SUPPRESSED
            released.append(
                [
                    label,
                    [
                        [i.start, i.end, i.at_risk, i.events, i.censored]
                        for i in protected.intervals
                    ],
                ]
            )
        t = policy.threshold
        groups = len(released)
        if withheld:
            rule = RuleResult(
                rules.SURVIVAL,
                False,
                f"{withheld} of {groups} {'group' if groups == 1 else 'groups'} could not be "
                f"grouped so that every count is at least {t}, so they are withheld",
            )
        elif merged:
            # Like rounding, merging coarsens what is released and withholds nothing: every
            # record still counts, so the output (and the combined curve) is whole.
            rule = RuleResult(
                rules.SURVIVAL,
                True,
                f"event times are merged into intervals so that every number at risk, event "
                f"count and censoring count is at least {t} (or 0)",
            )
        else:
            rule = RuleResult(
                rules.SURVIVAL,
                True,
                f"every number at risk, event count and censoring count is at least {t} (or 0)",
            )
        shown = groups - withheld
        if not groups or not shown:
            return NodeOutput(Outcome.BLOCKED, {}, (rule,))
        outcome = Outcome.RELEASED if not withheld else Outcome.SUPPRESSED
        payload = {"time": p["time"], "event": p["event"], "by": p["by"], "groups": released}
        return NodeOutput(outcome, payload, (rule,))

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        tables: dict[str | None, list[tuple[float, int, int]]] = {}
        withheld: dict[str | None, list[str]] = {}
        for node, payload in part.included.items():
            for label, intervals in as_rows(payload, "groups", 2, node):
                label = as_label(label, node, "a group label")
                if intervals is None:
                    withheld.setdefault(label, []).append(node)
                    continue
                if not isinstance(intervals, list):
                    raise malformed(node, "a group's intervals are not a list")
                rows = tables.setdefault(label, [])
                for interval in intervals:
                    if not isinstance(interval, list) or len(interval) != 5:
                        raise malformed(node, "an interval does not have 5 items")
                    end = as_float(interval[1], node, "an interval's end")
                    d = as_count(interval[3], node, "an event count")
                    c = as_count(interval[4], node, "a censoring count")
                    if end is None or d is None or c is None:
                        raise malformed(node, "an interval has a missing value")
                    rows.append((end, d, c))
        labels = sorted(set(tables) | set(withheld), key=label_key)
        if part.blocked:
            for label in labels:
                withheld.setdefault(label, []).extend(part.blocked)
        groups: list[list[Any]] = []
        curves: dict[str | None, list[tuple[float, int, int]]] = {}
        for label in labels:
            if label in withheld:
                groups.append([label, None])
                continue
            pooled = pool_event_table(tables[label])
            curves[label] = pooled
            groups.append([label, kaplan_meier_curve(pooled)])
        logrank = None
        if p["by"] is not None and len(curves) >= 2 and not withheld:
            logrank = logrank_test(list(curves.values()))
        return {
            "time": p["time"],
            "event": p["event"],
            "by": p["by"],
            "groups": groups,
            "logrank": logrank,
            "withheld": [[g, sorted(withheld[g])] for g in labels if g in withheld],
            "nodes": part.nodes,
        }

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return the survival table: one row per time (and group), as in the combined result.

        Index: time, or (by, time) with a `by` column. Columns: at_risk, events, censored
        (Int64), survival, std_err, ci_lower, ci_upper. A node's payload gives its released
        intervals instead (columns start, end, at_risk, events, censored). The log-rank
        test is in frame.attrs["logrank"].
        """
        import pandas as pd

        p = self.validate(params)
        records: list[dict[str, Any]] = []
        for label, value in as_rows(payload, "groups", 2, "(payload)"):
            if value is None:
                continue
            if isinstance(value, Mapping):
                for row in value.get("table") or []:
                    t, n, d, c, s, se, lo, hi = row
                    records.append(
                        {
                            "group": label,
                            "time": t,
                            "at_risk": n,
                            "events": d,
                            "censored": c,
                            "survival": s,
                            "std_err": se,
                            "ci_lower": lo,
                            "ci_upper": hi,
                        }
                    )
            else:
                for start, end, n, d, c in value:
                    records.append(
                        {
                            "group": label,
                            "start": start,
                            "end": end,
                            "at_risk": n,
                            "events": d,
                            "censored": c,
                        }
                    )
        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return frame
        for column in ("at_risk", "events", "censored"):
            frame[column] = frame[column].astype("Int64")
        for column in ("survival", "std_err", "ci_lower", "ci_upper"):
            if column in frame:
                frame[column] = frame[column].astype(float)
        time_key = "time" if "time" in frame else "start"
        if p["by"] is None:
            frame = frame.drop(columns="group").set_index(time_key)
        else:
            frame = frame.rename(columns={"group": p["by"]}).set_index([p["by"], time_key])
        if payload.get("logrank") is not None:
            frame.attrs["logrank"] = dict(payload["logrank"])
        return frame


def pool_event_table(rows: Sequence[tuple[float, int, int]]) -> list[tuple[float, int, int]]:
    """Return (time, events, censored) summed per distinct time, sorted by time."""
    pooled: dict[float, list[int]] = {}
    for t, d, c in rows:
        cell = pooled.setdefault(float(t), [0, 0])
        cell[0] += d
        cell[1] += c
    return [(t, d, c) for t, (d, c) in sorted(pooled.items())]


def kaplan_meier_curve(table: Sequence[tuple[float, int, int]]) -> dict[str, Any]:
    """Return the Kaplan-Meier estimate of a pooled event table (see the module docstring)."""
    at_risk = sum(d + c for _, d, c in table)
    total = at_risk
    survival = 1.0
    greenwood = 0.0
    rows: list[list[Any]] = []
    median = None
    for t, d, c in table:
        n = at_risk
        if d > 0 and n > 0:
            survival *= 1.0 - d / n
            greenwood = greenwood + d / (n * (n - d)) if n > d else math.inf
        se = survival * math.sqrt(greenwood) if survival > 0 and math.isfinite(greenwood) else None
        lower = upper = None
        if 0.0 < survival < 1.0 and math.isfinite(greenwood):
            sigma = math.sqrt(greenwood) / abs(math.log(survival))
            lower = survival ** math.exp(Z_95 * sigma)
            upper = survival ** math.exp(-Z_95 * sigma)
        elif survival == 1.0:
            lower = upper = 1.0
        if median is None and survival <= 0.5:
            median = t
        rows.append([t, n, d, c, finite_or_none(survival), _f(se), _f(lower), _f(upper)])
        at_risk -= d + c
    return {
        "n": total,
        "events": sum(d for _, d, _ in table),
        "median": median,
        "table": rows,
    }


def _f(value: float | None) -> float | None:
    return None if value is None else finite_or_none(value)


def logrank_test(tables: Sequence[Sequence[tuple[float, int, int]]]) -> dict[str, Any]:
    """Return the log-rank test across groups' pooled event tables: chi2, df, p_value."""
    from scipy import stats

    groups = len(tables)
    times = sorted({t for table in tables for t, d, _ in table if d > 0})
    index = {t: i for i, t in enumerate(times)}
    events = np.zeros((groups, len(times)))
    at_risk = np.zeros((groups, len(times)))
    for g, table in enumerate(tables):
        remaining = sum(d + c for _, d, c in table)
        ended = sorted(table)
        pos = 0
        for i, t in enumerate(times):
            while pos < len(ended) and ended[pos][0] < t:
                remaining -= ended[pos][1] + ended[pos][2]
                pos += 1
            at_risk[g, i] = remaining
        for t, d, _ in table:
            if d > 0:
                events[g, index[t]] += d
    n = at_risk.sum(axis=0)
    d = events.sum(axis=0)
    observed = events.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 0, at_risk / n, 0.0)
        expected = (share * d).sum(axis=1)
        factor = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    variance = np.zeros((groups, groups))
    for g in range(groups):
        for h in range(groups):
            delta = 1.0 if g == h else 0.0
            variance[g, h] = float(np.sum(factor * share[g] * (delta - share[h])))
    diff = (observed - expected)[:-1]
    v = variance[:-1, :-1]
    chi2 = float(diff @ np.linalg.pinv(v) @ diff)
    df = groups - 1
    return {
        "chi2": finite_or_none(chi2),
        "df": df,
        "p_value": finite_or_none(float(stats.chi2.sf(chi2, df))),
        "observed": observed.tolist(),
        "expected": [float(e) for e in expected],
    }
