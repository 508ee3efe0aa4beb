"""The kaplan_meier analysis: survival curves on the TRE's time grid, and the log-rank test.

Parameters: `time` (numeric: follow-up time, with a grid the TRE declares for it:
DatasetSchema.grids), `event` (integer 0/1 or boolean: 1 = the event happened, 0 =
censored), optional `width` (a whole multiple of the time grid; default the grid itself),
optional `by` (a categorical column: one curve per level, NULL its own level, and a
log-rank test across them), optional `filter`. A time column without a grid is refused.

Each node counts in its own SQL engine, per group and per grid interval ((i - 1) w, i w]
(a time within 1e-9 widths above a grid point counts as on it), the events and the
censorings with their cell keys, in one GROUP BY; then fedtre.disclosure.survival merges
intervals on their true counts until every event count is at least the threshold (or 0
where zeros are not disclosive) and every censoring count 0 or at least the threshold,
and releases, per interval, the number at risk at its start, its events and its
censorings through release.count (perturbed under the default policy), and its bounds
through release.bound: grid points, with the first start and the last end open (the
last interval is "after <start>", never the longest follow-up). A group that cannot be
protected is left out of the payload and never named (the output is then SUPPRESSED);
if every group is left out the output is BLOCKED.

- node payload (kinds declared in released_fields): {"time", "event", "by", "width"
  (parameters), "groups": [[label, [[start | null, end | null, at_risk, events,
  censored], ...]], ...]}
- combined: {"time", "event", "by",
             "groups": [[label, {"n", "events", "median", "table": [[time | null,
                         at_risk, events, censored, survival, std_err, ci_lower,
                         ci_upper], ...]} | null], ...],
             "logrank": {"chi2", "df", "p_value", "observed", "expected"} | null,
             "withheld": [[label, [node, ...]], ...], "nodes": {...}}

The estimator (docs/disclosure.md, "quantiles and kaplan_meier"): a life table on the
union of every node's released bounds, with the actuarial correction for spread records
and the Kaplan-Meier step for records at a grid point. Where a node's records are:
- a node's release is *unmerged* when each of its intervals with two finite bounds is one
  grid cell (width w) or empty (a permissive policy releases every non-empty grid
  interval on its own, empty stretches as intervals with no events and no censorings);
  then every interval's records are at its end (the open last one's: at the end of
  follow-up, after every released time);
- otherwise (merged, or no interval with two finite bounds) an interval of one grid cell
  still has its records at its end; a wider one (a, b] has its events and censorings
  spread uniformly in time over it (the first, (-inf, b], over (0, b]: times are
  follow-up, not negative); the open last one's are spread over an interval whose end
  is not released: they stay at risk until every released time has passed and are
  spread over the last row (its step is the actuarial one below).
The pooled rows are at the union's times v (after u, the previous one): the number at
risk N at u (each node's at risk at u: its interval's released number at risk less what
it spread before u), the spread events Ds and censorings Cs in (u, v], and the events Dp
and censorings Cp at v. The survival steps by (1 - Ds / (N - Cs / 2)) (the actuarial
life-table estimate: spread censorings are at risk for half the interval), then by
(1 - Dp / (N - Ds - Cs)) (Kaplan-Meier, censorings after events). A row's counts are
N, Ds + Dp, Cs + Cp (fractional where spread; rows where nothing happens are left out);
the last row (time null) is the open last intervals. When every event and censoring time
is a grid point and no interval is merged (a permissive policy: threshold 0 or 1,
rounding base 1, zeros not disclosive; a grid fine enough to separate every distinct
time), every step is a Kaplan-Meier step: the estimate is the Kaplan-Meier estimate of
the pooled records at every released time, and the log-rank test is the pooled one,
provided each node's last records (its open interval) lie at the common end of
follow-up (e.g. administrative censoring at the study's end) and each node releases an
interval with two finite bounds; a node whose longest follow-up ends earlier has those
records counted at risk until the end. Under merging, the curve at the released times is
near the pooled Kaplan-Meier estimate (bench/km_grouped.py: GBSG2 over three nodes,
default policy, largest difference 0.04-0.06 on average, 0.13 at most); the end of the
curve (the open last row) is not identified by what is released: spreading assumes the
open interval's censorings fall evenly, so administrative censoring at one end date
makes it too low and staggered entry is near it.
Standard errors are Greenwood's (with N - Cs / 2 at risk for a spread step); the 95% intervals use the log(-log) transform
(lifelines' default). The median is the first released time the survival is at or below
0.5 (null if it never is, or only in the open last row). The log-rank test compares
observed with expected events in each group over the same steps, on the union of every
group's bounds (a spread step: at risk N - Cs / 2, events Ds; a step at v: at risk
N - Ds - Cs, events Dp; chi-squared on groups - 1 degrees of freedom). Under cell-key
perturbation each released count is within noise_deviation of the true one, so the
curve is the estimate from the released counts. A node that BLOCKED makes every curve null; a node that left some group out
(SUPPRESSED) makes null every group it did not release (the coordinator cannot tell a
withheld group from an absent one); a null group makes the log-rank test null.
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
    by_groupings,
    released_by_groups,
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
from fedtre.disclosure import cellkey, distributions, release, rules
from fedtre.disclosure.survival import GridCell, protect_survival_table
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy
    from fedtre.disclosure.differencing import Grouping, Labels

_EXAMPLE = '{"time": "followup_years", "event": "died", "by": "sex"}'
Z_95 = 1.959963984540054
MAX_GROUPS = 50
# A node's non-empty (group, grid interval) cells it will read; finer grids are refused.
MAX_CELLS = 200_000
GRID_RULE = "grid"
_CELL_TOLERANCE = 1e-9
Kind = release.Kind
# One pooled row: (time, at risk, events, censored); time inf is the open last interval.
Row = tuple[float, float, float, float, float, float]
# One node's released interval: (start, end, at risk, events, censored); -inf/inf open.
Interval = tuple[float, float, int, int, int]


class KaplanMeierAnalysis(Analysis):
    """Kaplan-Meier survival curves on a time grid, optionally by group, with the log-rank test."""

    name = "kaplan_meier"
    description = "Kaplan-Meier survival with 95% CIs and numbers at risk; log-rank across groups."
    released_fields = {
        "time": Kind.PARAMETER,
        "event": Kind.PARAMETER,
        "by": Kind.PARAMETER,
        "width": Kind.PARAMETER,
        "groups.*.0": Kind.LABEL,
        "groups.*.1.*.0": Kind.BOUND,
        "groups.*.1.*.1": Kind.BOUND,
        "groups.*.1.*.2": Kind.COUNT,
        "groups.*.1.*.3": Kind.COUNT,
        "groups.*.1.*.4": Kind.COUNT,
    }

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("time", "event"),
            optional=("by", "width", "filter"),
            example=_EXAMPLE,
        )
        time = column_param(p, "time", analysis=self.name, example=_EXAMPLE)
        event = column_param(p, "event", analysis=self.name, example=_EXAMPLE)
        by = column_param(p, "by", analysis=self.name, example=_EXAMPLE)
        if time is None or event is None:
            raise InvalidRequest(f"kaplan_meier needs 'time' and 'event' columns, e.g. {_EXAMPLE}")
        if len({time, event, by} - {None}) != (3 if by else 2):
            raise InvalidRequest("kaplan_meier 'time', 'event' and 'by' must be different columns")
        width = p.get("width")
        if width is not None and (
            isinstance(width, bool)
            or not isinstance(width, int | float)
            or not math.isfinite(width)
            or width <= 0
        ):
            raise InvalidRequest(
                "kaplan_meier 'width' must be a positive multiple of the TRE's grid for the "
                "time column (leave it out to use the grid itself)"
            )
        return {
            "time": time,
            "event": event,
            "by": by,
            "width": None if width is None else float(width),
            "filter": filter_param(p),
        }

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's records with a time and an event status: those the curves describe."""
        p = self.validate(params)
        return complete_cohort(p["filter"], [p["time"], p["event"]])

    def groupings(self, params: Mapping[str, Any]) -> list[Grouping]:
        """Each curve's records (a level of `by`) are remembered like a cohort."""
        return by_groupings(self.validate(params)["by"])

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[Grouping, Labels]]:
        """The groups whose curve the payload releases."""
        return released_by_groups(self.validate(params)["by"], payload.get("groups", []))

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        problems = (
            column_problems(p["time"], role="time", schema=schema, allowed=NUMERIC_TYPES)
            + column_problems(
                p["event"], role="event", schema=schema, allowed=frozenset({"integer", "boolean"})
            )
            + column_problems(p["by"], role="by", schema=schema, allowed=CATEGORICAL_TYPES)
            + schema_filter_problems(p["filter"], schema)
        )
        if problems:
            return problems
        return distributions.grid_problems(
            p["time"], p["width"], 0.0, schema.grids, analysis=self.name, dataset=schema.name
        )

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table, types = source.table, source.schema.columns
        width = p["width"] if p["width"] is not None else float(source.schema.grids[p["time"]])
        time = sa.cast(table.c[p["time"]], sa.Double)
        event = numeric_expr(table, p["event"], types[p["event"]])
        conditions = complete_cases(table, [p["time"], p["event"]], p["filter"])
        # The grid interval ((i - 1) w, i w] of each time: i = ceil(t / w), in the engine.
        steps = time / width - distributions.GRID_TOLERANCE
        index = (-sa.func.floor(-steps)).label("i")
        record_key = cellkey.record_key_of(source)
        event_key = cellkey.cell_key_sum(sa.case((event == 1.0, record_key), else_=0))
        censored_key = cellkey.cell_key_sum(sa.case((event == 0.0, record_key), else_=0))
        keys = [table.c[p["by"]]] if p["by"] else []
        query = (
            sa.select(*keys, index, sa.func.sum(event), sa.func.count(), event_key, censored_key)
            .where(*conditions)
            .group_by(*keys, index)
        )
        bad = sa.select(sa.func.count()).where(*conditions, sa.and_(event != 0.0, event != 1.0))
        groups: dict[str | None, dict[int, list[int]]] = {}
        cells = 0
        with source.engine.connect() as conn:
            if conn.execute(bad).scalar_one():
                raise InvalidRequest(
                    f"the event column {p['event']!r} has values at this node other than 0 and 1"
                )
            for row in conn.execution_options(yield_per=10_000).execute(query):
                label = category_label(row[0], types[p["by"]]) if p["by"] else None
                i, d, n, kd, kc = row[-5:]
                cell = groups.setdefault(label, {}).get(int(i))
                if cell is None:
                    groups[label][int(i)] = [int(d or 0), int(n) - int(d or 0), int(kd), int(kc)]
                    cells += 1
                else:
                    cell[0] += int(d or 0)
                    cell[1] += int(n) - int(d or 0)
                    cell[2] = cellkey.combine_keys([cell[2], int(kd)])
                    cell[3] = cellkey.combine_keys([cell[3], int(kc)])
                if len(groups) > MAX_GROUPS:
                    raise InvalidRequest(f"'by' has more than {MAX_GROUPS} levels; group it first")
                if cells > MAX_CELLS:
                    raise InvalidRequest(
                        f"the time grid is too fine for this node's data (more than {MAX_CELLS} "
                        "non-empty intervals); use a wider width"
                    )
        return {
            "width": width,
            "groups": [
                [label, [[i, *cell] for i, cell in sorted(groups[label].items())]]
                for label in sorted(groups, key=label_key)
            ],
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Protect each group's grid table; leave out (unnamed) the groups that cannot be."""
        p = self.validate(params)
        width = float(raw["width"])

        def bound(index: int | None) -> float | None:
            return None if index is None else release.bound(index * width, width, 0.0)

        released: list[list[Any]] = []
        withheld = merged = 0
        for label, rows in raw["groups"]:
            cells = [GridCell(int(i), int(d), int(c), int(kd), int(kc)) for i, d, c, kd, kc in rows]
            protected = protect_survival_table(cells, policy)
            if protected.outcome is Outcome.BLOCKED:
                withheld += 1
                continue
            merged += len(protected.intervals) < len(cells)
            intervals = [
                [bound(i.start), bound(i.end), i.at_risk, i.events, i.censored]
                for i in protected.intervals
            ]
            released.append([release.label(label), intervals])
        t = policy.threshold
        groups = len(raw["groups"])
        if withheld:
            rule = RuleResult(
                rules.SURVIVAL,
                False,
                f"{withheld} of {groups} {'group' if groups == 1 else 'groups'} could not be "
                f"grouped so that every count is at least {t}, so they are left out",
            )
        else:
            # Like rounding, merging coarsens what is released and withholds nothing.
            rule = RuleResult(
                rules.SURVIVAL,
                True,
                ("grid intervals are merged so that " if merged else "")
                + f"every number at risk, event count and censoring count is at least {t} "
                "(or 0)",
            )
        checked = (
            rule,
            rules.count_rule(policy),
            RuleResult(GRID_RULE, True, "times are grid points; the last interval is open"),
        )
        if not released:
            return NodeOutput(Outcome.BLOCKED, {}, checked)
        outcome = Outcome.RELEASED if not withheld else Outcome.SUPPRESSED
        payload = {
            "time": p["time"],
            "event": p["event"],
            "by": p["by"],
            "width": width,
            "groups": released,
        }
        return NodeOutput(outcome, payload, checked)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        released: dict[str | None, dict[str, list[Interval]]] = {}
        widths: dict[str, float] = {}
        for node, payload in part.included.items():
            widths[node] = _width(payload, node)
            for label, intervals in as_rows(payload, "groups", 2, node):
                label = as_label(label, node, "a group label")
                released.setdefault(label, {})[node] = _intervals(intervals, node)
        labels = sorted(released, key=label_key)
        suppressed = [
            node
            for node, output in outputs.items()
            if Outcome(output.outcome) is Outcome.SUPPRESSED
        ]
        withheld: dict[str | None, list[str]] = {}
        for label in labels:
            missing = [n for n in suppressed if n not in released[label]] + list(part.blocked)
            if missing:
                withheld[label] = sorted(missing)
        groups: list[list[Any]] = []
        curves: dict[str | None, dict[str, list[Interval]]] = {}
        for label in labels:
            if label in withheld:
                groups.append([label, None])
                continue
            curves[label] = released[label]
            nodes = [(iv, widths[node]) for node, iv in released[label].items()]
            groups.append([label, kaplan_meier_curve(pool_intervals(nodes))])
        logrank = None
        if p["by"] is not None and len(curves) >= 2 and not withheld:
            logrank = logrank_test(
                [[(iv, widths[node]) for node, iv in c.items()] for c in curves.values()]
            )
        return {
            "time": p["time"],
            "event": p["event"],
            "by": p["by"],
            "groups": groups,
            "logrank": logrank,
            "withheld": [[g, withheld[g]] for g in labels if g in withheld],
            "nodes": part.nodes,
        }

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return the survival table: one row per time (and group), as in the combined result.

        Index: time (NaN for the open last row: after every released time), or (by, time)
        with a `by` column. Columns: at_risk, events, censored (float: fractional where a
        merged interval's records are spread), survival, std_err,
        ci_lower, ci_upper. A node's payload gives its released intervals instead (columns
        start, end, at_risk, events, censored (Int64); NaN for the open bounds). The log-rank test
        is in frame.attrs["logrank"].
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
                            "time": math.nan if t is None else t,
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
                            "start": math.nan if start is None else start,
                            "end": math.nan if end is None else end,
                            "at_risk": n,
                            "events": d,
                            "censored": c,
                        }
                    )
        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return frame
        # node intervals: released whole counts; combined rows: estimates, fractional
        # where a merged interval's records are spread
        for column in ("at_risk", "events", "censored"):
            frame[column] = frame[column].astype("Int64" if "end" in frame else float)
        for column in ("time", "start", "end", "survival", "std_err", "ci_lower", "ci_upper"):
            if column in frame:
                frame[column] = frame[column].astype(float)
        time_key = "time" if "time" in frame else "end"
        if p["by"] is None:
            frame = frame.drop(columns="group").set_index(time_key)
        else:
            frame = frame.rename(columns={"group": p["by"]}).set_index([p["by"], time_key])
        if payload.get("logrank") is not None:
            frame.attrs["logrank"] = dict(payload["logrank"])
        return frame


def _width(payload: Mapping[str, Any], node: str) -> float:
    width = as_float(payload.get("width"), node, "the width")
    if width is None or not width > 0:
        raise malformed(node, "the width is not a positive number")
    return width


def _intervals(value: Any, node: str) -> list[Interval]:
    """Read one group's released intervals: bounds increasing, only the outer ones open."""
    if not isinstance(value, list) or not value:
        raise malformed(node, "a group's intervals are not a non-empty list")
    out: list[Interval] = []
    last = len(value) - 1
    for k, interval in enumerate(value):
        if not isinstance(interval, list) or len(interval) != 5:
            raise malformed(node, "an interval does not have 5 items")
        start = as_float(interval[0], node, "an interval's start")
        end = as_float(interval[1], node, "an interval's end")
        if (start is None) != (k == 0) or (end is None) != (k == last):
            raise malformed(node, "only the first start and the last end may be open")
        counts = [as_count(v, node, "a count") for v in interval[2:]]
        if any(v is None for v in counts):
            raise malformed(node, "an interval has a missing count")
        n, d, c = (int(v or 0) for v in counts)
        a = -math.inf if start is None else start
        b = math.inf if end is None else end
        if b <= a or (out and a != out[-1][1]):
            raise malformed(node, "the intervals are not consecutive")
        out.append((a, b, n, d, c))
    return out


def _merged(intervals: Sequence[Interval], width: float) -> bool:
    """Whether a node's release of a group shows merging: an interval with two finite
    bounds that is wider than one grid cell and not empty, or no such interval at all."""
    inner = [iv for iv in intervals if math.isfinite(iv[0]) and math.isfinite(iv[1])]
    return not inner or any(
        b - a > width * (1 + _CELL_TOLERANCE) and d + c > 0 for a, b, _, d, c in inner
    )


def _span(a: float, b: float, width: float, merged: bool) -> tuple[float, float] | None:
    """Where an interval's records are: None for at its end (the end of follow-up for the
    open last one), else the span (s, e] they are spread over uniformly in time."""
    if not merged or b - a <= width * (1 + _CELL_TOLERANCE):
        return None
    if math.isinf(b):
        return (a, b)
    if math.isinf(a):
        return (0.0, b) if b > width * (1 + _CELL_TOLERANCE) else None
    return (a, b)


def pool_intervals(nodes: Any, times: Sequence[float] | None = None) -> list[Row]:
    """Return the pooled rows (time, at risk, spread events, spread censorings, events,
    censorings) of the nodes' intervals; nodes: (intervals, width) pairs."""
    tables = [(list(ivs), float(w), _merged(ivs, float(w))) for ivs, w in nodes]
    if times is None:
        times = sorted(
            {b for intervals, *_ in tables for _, b, *_ in intervals if math.isfinite(b)}
        )
    rows: list[Row] = []
    previous = -math.inf
    for tau in [*times, math.inf]:
        n = ds = cs = dp = cp = 0.0
        for intervals, width, merged in tables:
            for a, b, at_risk, events, censored in intervals:
                if b < tau:
                    continue
                span = _span(a, b, width, merged)
                if span is None:
                    n += at_risk
                    if b == tau:
                        dp += events
                        cp += censored
                elif math.isinf(span[1]):  # spread over the open last interval
                    n += at_risk
                    if b == tau:
                        ds += events
                        cs += censored
                else:
                    s, e = span
                    lo = min(1.0, max(0.0, (previous - s) / (e - s)))
                    hi = min(1.0, max(0.0, (tau - s) / (e - s)))
                    n += at_risk - (events + censored) * lo
                    ds += events * (hi - lo)
                    cs += censored * (hi - lo)
                break
        rows.append((tau, n, ds, cs, dp, cp))
        previous = tau
    return rows


def _steps(row: Row) -> list[tuple[float, float]]:
    """The (at risk, events) steps of a pooled row: the spread counts with the actuarial
    correction, then the counts at the row's time."""
    _, n, ds, cs, dp, _ = row
    return [(n - cs / 2.0, ds), (n - ds - cs, dp)]


def kaplan_meier_curve(table: Sequence[Row]) -> dict[str, Any]:
    """Return the estimate of pooled rows (see the module docstring)."""
    survival = 1.0
    greenwood = 0.0
    rows: list[list[Any]] = []
    median = None
    for row in table:
        t, n, ds, cs, dp, cp = row
        if ds + cs + dp + cp <= 0 and math.isfinite(t):
            continue
        for at_risk, d in _steps(row):
            if d > 0 and at_risk > 0:
                survival *= max(0.0, 1.0 - d / at_risk)
                greenwood = greenwood + d / (at_risk * (at_risk - d)) if at_risk > d else math.inf
        se = survival * math.sqrt(greenwood) if survival > 0 and math.isfinite(greenwood) else None
        lower = upper = None
        if 0.0 < survival < 1.0 and math.isfinite(greenwood):
            sigma = math.sqrt(greenwood) / abs(math.log(survival))
            lower = survival ** math.exp(Z_95 * sigma)
            upper = survival ** math.exp(-Z_95 * sigma)
        elif survival == 1.0:
            lower = upper = 1.0
        time = t if math.isfinite(t) else None
        if median is None and survival <= 0.5 and time is not None:
            median = time
        rows.append(
            [
                time,
                _n(n),
                _n(ds + dp),
                _n(cs + cp),
                finite_or_none(survival),
                _f(se),
                _f(lower),
                _f(upper),
            ]
        )
    return {
        "n": _n(table[0][1]) if table else 0,
        "events": _n(sum(r[2] + r[4] for r in table)),
        "median": median,
        "table": rows,
    }


def _n(value: float) -> int | float:
    """A pooled count: whole where nothing is spread, else to 2 decimals."""
    whole = round(value)
    return int(whole) if abs(value - whole) < 1e-6 else round(value, 2)


def _f(value: float | None) -> float | None:
    return None if value is None else finite_or_none(value)


def logrank_test(groups: Sequence[Sequence[tuple[Sequence[Interval], float]]]) -> dict[str, Any]:
    """Return the log-rank test across groups (each: its nodes' (intervals, width))."""
    from scipy import stats

    times = sorted(
        {
            b
            for nodes in groups
            for intervals, _ in nodes
            for _, b, *_ in intervals
            if math.isfinite(b)
        }
    )
    count = len(groups)
    tables = [pool_intervals(nodes, times) for nodes in groups]
    steps = [[s for row in table for s in _steps(row)] for table in tables]
    at_risk = np.array([[r for r, _ in g] for g in steps], dtype=float)
    events = np.array([[d for _, d in g] for g in steps], dtype=float)
    keep = events.sum(axis=0) > 0
    at_risk, events = np.maximum(at_risk[:, keep], 0.0), events[:, keep]
    n = at_risk.sum(axis=0)
    d = events.sum(axis=0)
    observed = events.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 0, at_risk / n, 0.0)
        expected = (share * d).sum(axis=1)
        factor = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    variance = np.zeros((count, count))
    for g in range(count):
        for h in range(count):
            delta = 1.0 if g == h else 0.0
            variance[g, h] = float(np.sum(factor * share[g] * (delta - share[h])))
    diff = (observed - expected)[:-1]
    v = variance[:-1, :-1]
    chi2 = float(diff @ np.linalg.pinv(v) @ diff)
    df = count - 1
    return {
        "chi2": finite_or_none(chi2),
        "df": df,
        "p_value": finite_or_none(float(stats.chi2.sf(chi2, df))),
        "observed": observed.tolist(),
        "expected": [float(e) for e in expected],
    }
