"""The cox analysis: Cox proportional hazards stratified by node, by federated Newton-Raphson.

Parameters: `time` (numeric follow-up time), `event` (integer 0/1 or boolean: 1 = the
event happened, 0 = censored), `covariates` (at least one; fedtre.analyses.design:
numeric columns, and categorical ones expanded into level indicators as the
regressions do), optional `filter`, `levels`, `ties` ("efron", the default, or
"breslow"), `max_iter` (default 25, at most 100), `tol` (default 1e-10) and
`stratified` (true, the default; false is refused, see below).

The model: each TRE is a stratum with its own baseline hazard, and the covariates share
one set of coefficients, as lifelines' `CoxPHFitter().fit(pooled, strata=["node"])`.
The partial likelihood is a product over strata, so its log, score vector and
information matrix are sums of the nodes' own, each computed from that node's risk sets
alone: the fit is exact, one round of tasks per Newton-Raphson iteration.

- round 1 is at beta = 0 over each node's own design columns (every level it has,
  reference included) and reports which levels it has; the coordinator agrees the design
  (fedtre.analyses.design.unify_design), takes the model's terms of the nodes' summed
  score and information (at beta = 0 the derivatives of any column set are the sub-block
  of a larger one's), and solves for beta_1 = I^-1 U;
- round k > 1 sends beta_{k-1} and the agreed levels; each node returns the score U,
  information I and log partial likelihood at that beta; the coordinator steps
  beta_k = beta_{k-1} + (sum I)^-1 (sum U). A round whose log-likelihood fell (or was not
  finite) is retried at half the step.
- It stops when every coefficient moved by at most tol x max(1, |coefficient|), or after
  max_iter rounds (converged = false). Standard errors are the square roots of
  diag((sum I)^-1) at the last round's beta, which differs from the reported
  coefficients by less than tol; so both equal the pooled stratified fit's.

At a node, the engine does the work (no record reaches Python): one query computes each
record's weight w = exp(x'b - c) once (c: the node's largest x'b, so no weight
overflows; the partial likelihood does not depend on c; a MATERIALIZED common table
expression on SQLite, PostgreSQL and DuckDB, which would otherwise evaluate it again for
every sum), groups the records by distinct time, summing w, x w and x x' w over all
records and over the events at that time, and the events' x and x'b; window functions
then accumulate the first three from the latest time down, which gives the risk-set
sums at each time, and only the times with an event are read. The Breslow or Efron
terms of those times (a per-event-time table that never leaves the agent) are summed in
numpy, a block of times at a time (Efron: one pass per tie rank).

Unstratified (one baseline hazard across TREs) is refused: its risk sets span nodes,
so every node would have to release, per event time (or per time-grid interval), its
risk-set sums of exp(x'b) and x exp(x'b) with its number of events. Consecutive sums
differ by the records that left the risk set in between, so these sums give the
covariates of the few people who had an event or were censored at a time, and
on a time grid they would be a survival table with covariate totals per interval that
none of the release pipeline's rules covers; a grid approximation would also not be the
Cox model anyone fits. The stratified fit is exact and releases no per-time figure.

Disclosure rules, every round, before anything leaves (fedtre.disclosure.models):
check_model (residual degrees of freedom and parameters per record over the records;
level counts of each categorical covariate and of the event indicator, so at least
`threshold` events and `threshold` censorings; NK and p% on every numeric covariate;
leverage of the design at most 1/threshold) and events_per_parameter (parameters at
most a third of the events, and events less parameters at least min_residual_df), and
table_model: with no numeric covariate every weight exp(x'b) takes one value per level,
so the exact likelihood and information are functions of the integer numbers at risk per
level at each event time (policy.categorical_only_models allows such models; a
Kaplan-Meier by group is the table). A failing round is BLOCKED; the researcher sees the
rule family only. The cohort (the filter's complete cases) goes through the agent's
cohort-size and differencing rules like every analysis, and its event records and its
censored records (whose counts leave as events and n - events) are remembered as groups.

- node payload of a round (kinds of fedtre.disclosure.release): {"n": count, "events":
  count, "covariates": [[spec, kind, type, [levels]], ...], "basis": [[spec, level |
  null], ...], "score": [model...], "information": [[model...]], "log_likelihood":
  model, "finite": model (0.0 when beta overflowed this node: then only n, events and
  finite are sent)}. n and events are released counts (threshold, then cell-key noise
  with the keys of the model's records and of its events, so every round releases the
  same); the model statistics are exact, for the coordinator, and never shown per node.
- combined: fedtre.analyses.regression's table (z statistics) over the terms (no
  intercept) with hazard_ratio, hr_ci_lower, hr_ci_upper, and "model" (see CoxFit).
  No figure at beta = 0 leaves the coordinator (round 1's likelihood, the null
  likelihood, the likelihood-ratio test): there every weight is 1, so exp(-ll0) is the
  product of the numbers at risk at the event times, which an exact ll0 nearly states.

Concordance is not computed: Harrell's C compares every pair of comparable records, and
a pooled C needs pairs across nodes, which means each node's ranked risk scores with
their times (record-level data); a per-node C is a different figure, needs a self-join
of the records, and would release a new count of pairs that no release rule covers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import DatasetSchema, DataSource, NodeOutput, Outcome
from fedtre.analyses.ctes import materialized
from fedtre.analyses.design import (
    CATEGORICAL,
    DESIGN_FIELDS,
    GlobalDesign,
    as_matrix,
    as_vector,
    basis_expr,
    complete_cases,
    covariate_problems,
    covariate_report,
    covariates_param,
    expand,
    finite_or_none,
    levels_param,
    local_levels,
    max_leverage,
    model_records,
    node_basis,
    numeric_expr,
    order_levels,
    parse_covariate,
    unify_design,
)
from fedtre.analyses.iterative import RoundStep, split_round
from fedtre.analyses.linear_regression import scaled_inverse
from fedtre.analyses.newton import NewtonAnalysis, halved, iteration_params, newton_step
from fedtre.analyses.params import (
    check_keys,
    column_param,
    column_problems,
    complete_cohort,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import as_count, as_float, malformed
from fedtre.analyses.regression import coefficient_table, regression_frame
from fedtre.disclosure import release
from fedtre.disclosure.cellkey import cell_key_sum, record_key_of
from fedtre.disclosure.models import (
    check_model,
    events_per_parameter,
    released_count,
    released_design,
    released_events,
)
from fedtre.disclosure.release import Kind
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy
    from fedtre.disclosure.differencing import Grouping, Labels

_EXAMPLE = '{"time": "follow_up_days", "event": "event", "covariates": ["age", "sex"]}'
TIES = ("efron", "breslow")
# Per-event-time rows read from the engine at once.
CHUNK_TIMES = 5_000
# exp(x'b - c) is taken of at least this: below it a weight is 0 to double precision
# beside the largest (1), and PostgreSQL raises an error on exp() underflow.
MIN_EXPONENT = -700.0
UNSTRATIFIED = (
    "cox with 'stratified': false (one baseline hazard across TREs) is refused: its risk "
    "sets span nodes, so each node would have to release per-time sums of exp(x'b) and "
    "x exp(x'b), and consecutive sums give away the covariates of the few people who "
    "leave the risk set between two times. Leave 'stratified' out: each TRE then has its "
    "own baseline hazard and the fit is exact"
)
HR_COLUMNS = ("hazard_ratio", "hr_ci_lower", "hr_ci_upper")
# The event column's levels as the differencing memory labels them (integer or boolean).
EVENT_LABELS = ("0", "1", "false", "true")


class CoxAnalysis(NewtonAnalysis):
    """Cox proportional hazards stratified by node, fitted over several rounds."""

    name = "cox"
    description = (
        "Cox proportional hazards stratified by node (federated Newton-Raphson): hazard "
        "ratios, SE, z, p, CIs, log partial likelihood."
    )
    released_fields = {
        "n": Kind.COUNT,
        "events": Kind.COUNT,
        **{path: Kind(kind) for path, kind in DESIGN_FIELDS.items()},
        "score.*": Kind.MODEL,
        "information.*.*": Kind.MODEL,
        "log_likelihood": Kind.MODEL,
        "finite": Kind.MODEL,
    }

    # -- parameters ------------------------------------------------------------------

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("time", "event", "covariates"),
            optional=("filter", "levels", "ties", "stratified", "max_iter", "tol"),
            example=_EXAMPLE,
        )
        time = column_param(p, "time", analysis=self.name, example=_EXAMPLE)
        event = column_param(p, "event", analysis=self.name, example=_EXAMPLE)
        if time is None or event is None:
            raise InvalidRequest(f"cox needs 'time' and 'event' columns, e.g. {_EXAMPLE}")
        if time == event:
            raise InvalidRequest("cox 'time' and 'event' must be different columns")
        covariates = covariates_param(p, analysis=self.name, example=_EXAMPLE)
        if not covariates:
            raise InvalidRequest(f"cox needs at least one covariate, e.g. {_EXAMPLE}")
        for spec in covariates:
            if parse_covariate(spec).column in (time, event):
                raise InvalidRequest(f"cox: covariate {spec!r} is the time or the event column")
        ties = p.get("ties", "efron")
        if ties is None:
            ties = "efron"
        if ties not in TIES:
            raise InvalidRequest(f"cox parameter 'ties' must be one of {list(TIES)}")
        stratified = p.get("stratified", True)
        if stratified is None:
            stratified = True
        if not isinstance(stratified, bool):
            raise InvalidRequest("cox parameter 'stratified' must be true or false")
        if not stratified:
            raise InvalidRequest(UNSTRATIFIED)
        return {
            "time": time,
            "event": event,
            "covariates": covariates,
            "filter": filter_param(p),
            "levels": levels_param(p, covariates, analysis=self.name),
            "ties": ties,
            **iteration_params(p, self.name),
        }

    def _columns(self, p: Mapping[str, Any]) -> list[str]:
        return [p["time"], p["event"], *(parse_covariate(c).column for c in p["covariates"])]

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's complete cases: the records the model is fitted on."""
        p = self.validate(split_round(params)[0])
        return complete_cohort(p["filter"], self._columns(p))

    def groupings(self, params: Mapping[str, Any]) -> list[Grouping]:
        """The model's events and censorings leave as counts (events, n - events): their
        records are remembered like the groups of a table of the event column."""
        return [(self.validate(split_round(params)[0])["event"],)]

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[Grouping, Labels]]:
        """Both levels of the event column, when the payload releases the counts (a level
        the node's records lack was not measured, and is passed over)."""
        if payload.get("events") is None:
            return set()
        event = self.validate(split_round(params)[0])["event"]
        return {((event,), (label,)) for label in EVENT_LABELS}

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(split_round(params)[0])
        return (
            column_problems(
                p["time"], role="time", schema=schema, allowed=frozenset({"integer", "float"})
            )
            + column_problems(
                p["event"], role="event", schema=schema, allowed=frozenset({"integer", "boolean"})
            )
            + covariate_problems(p["covariates"], schema)
            + schema_filter_problems(p["filter"], schema)
        )

    # -- at the node -------------------------------------------------------------------

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        job_params, round_params = split_round(params)
        p = self.validate(job_params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        r = self.validate_round(p, round_params) if round_params else {}
        table, types = source.table, source.schema.columns
        specs = p["covariates"]
        conditions = complete_cases(table, self._columns(p), p["filter"])
        time = sa.cast(table.c[p["time"]], sa.Double)
        event = numeric_expr(table, p["event"], types[p["event"]])
        record_key = record_key_of(source)  # before connecting: see model_records
        with source.engine.connect() as conn:
            _check_event(conn, event, conditions, p["event"])
            counts = local_levels(conn, table, specs, types, conditions)
            if r:
                levels = dict(r["levels"])
                for spec, present in counts.items():
                    if set(present) - set(levels.get(spec, ())):
                        raise InvalidRequest(
                            f"covariate {spec!r} has a level at this node that the agreed design "
                            "lacks (did the data change during the job?); submit the job again"
                        )
                basis = node_basis(specs, types, levels, drop_reference=True)
                beta = np.asarray(r["beta"], dtype=float)
                if len(beta) != len(basis):
                    raise InvalidRequest("cox: the round's beta does not match the model's terms")
            else:
                levels = {
                    s: order_levels(c, types[parse_covariate(s).column]) for s, c in counts.items()
                }
                basis = node_basis(specs, types, levels, drop_reference=False)
                beta = np.zeros(len(basis))
            columns = [basis_expr(table, b, types) for b in basis]
            eta: sa.ColumnElement[Any] = sa.literal(0.0, sa.Double)
            for b, column in zip(beta, columns, strict=True):
                if b != 0.0:
                    eta = eta + sa.literal(float(b), sa.Double) * column
            numeric = {
                parse_covariate(b.spec).column: e
                for b, e in zip(basis, columns, strict=True)
                if b.label is None
            }
            event_key = cell_key_sum(sa.case((event == 1.0, record_key), else_=0))
            records = model_records(
                conn,
                record_key,
                numeric,
                conditions,
                extra=[sa.func.sum(event), event_key, sa.func.max(eta)],
            )
            leverage = max_leverage(conn, columns, conditions, n=records.n)
            events = int(records.extra[0] or 0)
            shift = float(records.extra[2] or 0.0)
            sums = _PartialLikelihood(len(basis), p["ties"])
            for block in _event_times(conn, time, event, columns, eta, shift, conditions):
                sums.add(block)
        return {
            "n": records.n,
            "key": records.key,
            "events": events,
            "event_key": int(records.extra[1] or 0),
            "leverage": leverage,
            "magnitudes": records.magnitudes,
            "covariates": covariate_report(specs, types, counts),
            "basis": [b.key() for b in basis],
            "score": sums.score.tolist(),
            "information": sums.information().tolist(),
            "log_likelihood": sums.log_likelihood,
            "finite": sums.finite(),
            "level_counts": counts,
            "start": not r,
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Release the round's score, information and likelihood only when every model
        rule passes (check_model, events_per_parameter)."""
        p = self.validate(split_round(params)[0])
        n, events = int(raw["n"]), int(raw["events"])
        levels: dict[str, dict[str | None, int]] = {p["event"]: {"0": n - events, "1": events}}
        for spec, counts in raw["level_counts"].items():
            levels[spec] = {k: int(v) for k, v in counts.items()}
        if not policy.zeros_disclosive:
            # a level the node lacks is not a cell it could disclose
            levels = {v: {k: c for k, c in cs.items() if c > 0} for v, cs in levels.items()}
        parameters = len(raw["score"])
        if raw["start"]:
            parameters -= sum(1 for c in raw["covariates"] if c[1] == CATEGORICAL and c[3])
        checked = check_model(
            records=n,
            parameters=parameters,
            levels=levels,
            policy=policy,
            magnitudes=raw["magnitudes"],
            numeric_covariates=sum(1 for c in raw["covariates"] if c[1] != CATEGORICAL),
            leverage=raw.get("leverage"),
        )
        rules = (*checked.rules, events_per_parameter(events, parameters, policy))
        if not all(rule.passed for rule in rules):
            return NodeOutput(Outcome.BLOCKED, {}, rules)
        released_n, count_rules = released_count(n, raw["key"], policy)
        released_e, event_rules = released_events(events, raw["event_key"], policy)
        rules += count_rules + event_rules
        if released_n is None or released_e is None:
            return NodeOutput(Outcome.BLOCKED, {}, rules)
        if not raw["finite"]:
            # beta overflowed this node's linear predictor: say so, release no figures
            overflowed = {"n": released_n, "events": released_e, "finite": release.model(0.0)}
            return NodeOutput(Outcome.RELEASED, overflowed, rules)
        covariates, basis = released_design(raw["covariates"], raw["basis"])
        payload: dict[str, Any] = {
            "n": released_n,
            "events": released_e,
            "covariates": covariates,
            "basis": basis,
            "score": release.models(raw["score"]),
            "information": release.models(raw["information"]),
            "log_likelihood": release.model(raw["log_likelihood"]),
            "finite": release.model(1.0),
        }
        return NodeOutput(Outcome.RELEASED, payload, rules)

    # -- at the coordinator ------------------------------------------------------------

    def advance(
        self,
        params: Mapping[str, Any],
        state: Mapping[str, Any],
        outputs: Mapping[str, NodeOutput],
    ) -> RoundStep:
        p = self.validate(params)
        payloads = {node: out.payload for node, out in outputs.items()}
        if not payloads:
            raise InvalidRequest("no node released this round")
        iteration = int(state.get("iteration", 0)) + 1
        start = state.get("design") is None
        if start:
            design = unify_design(
                p["covariates"],
                {node: payload.get("covariates") for node, payload in payloads.items()},
                p["levels"],
            )
        else:
            design = GlobalDesign.from_json(state["design"])
        terms = design.terms[1:]  # no intercept: the baseline hazards absorb it
        finite = all(payload.get("finite") == 1 for payload in payloads.values())
        if not finite:
            pooled = None
        else:
            pooled = _pooled(design, payloads, start=start)
        if start:
            if pooled is None:
                raise InvalidRequest("the fit overflowed at its start; rescale the covariates")
            _check_size(pooled.events, len(terms))
            beta = np.zeros(len(terms))
            step = newton_step(pooled.information, pooled.score, terms)
            next_state = {
                "iteration": iteration,
                "design": design.to_json(),
                "beta": (beta + step).tolist(),
                "n": pooled.n,
                "events": pooled.events,
                "accepted_beta": beta.tolist(),
                "accepted_log_likelihood": pooled.log_likelihood,
                "halvings": 0,
            }
            # no likelihood at beta = 0 for the researcher (see _result)
            return RoundStep(next_state, False, {"iteration": iteration})
        beta = np.asarray(state["beta"], dtype=float)
        previous = float(state["accepted_log_likelihood"])
        worse = pooled is None or pooled.log_likelihood < previous - 1e-12 * max(1.0, abs(previous))
        if worse:
            next_state = halved(
                state,
                iteration,
                p["max_iter"],
                "the fit diverged (the partial likelihood kept falling); a covariate may "
                "predict the events perfectly (monotone likelihood): remove or merge it",
            )
            # the accepted likelihood may be round 1's, at beta = 0: not shown
            return RoundStep(next_state, False, {"iteration": iteration})
        assert pooled is not None
        step = newton_step(pooled.information, pooled.score, terms)
        new_beta = beta + step
        moved = np.abs(step) / np.maximum(1.0, np.abs(new_beta))
        converged = bool(np.all(moved <= p["tol"]))
        progress = {"iteration": iteration, "log_likelihood": pooled.log_likelihood}
        if not (converged or iteration >= p["max_iter"]):
            next_state = {
                **state,
                "iteration": iteration,
                "beta": new_beta.tolist(),
                "n": pooled.n,
                "events": pooled.events,
                "accepted_beta": beta.tolist(),
                "accepted_log_likelihood": pooled.log_likelihood,
                "halvings": 0,
            }
            return RoundStep(next_state, False, progress)
        cov = scaled_inverse(pooled.information, list(terms))
        result = _result(p, terms, new_beta, cov, pooled, iteration, converged)
        final = {**state, "iteration": iteration, "beta": new_beta.tolist()}
        return RoundStep(final, True, progress, result)

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return the coefficient table indexed by term, with hazard ratios and their 95%
        intervals; a node's round payload is not tabular."""
        if "terms" not in payload:
            return None
        frame = regression_frame(payload)
        for column in HR_COLUMNS:
            values = payload.get(column) or []
            if len(values) == len(frame.index):
                frame[column] = [np.nan if v is None else float(v) for v in values]
        return frame[["coef", "hazard_ratio", *frame.columns.drop(["coef", "hazard_ratio"])]]


@dataclass(frozen=True)
class CoxFit:
    """A fitted Cox model's figures: `Result.model` for cox results.

    n and events: sums of the nodes' released (perturbed) counts, never the exact numbers;
    log_likelihood: the log partial likelihood at the fit (the sum over the nodes'
    strata), exact; aic_partial: -2 log_likelihood + 2 parameters (lifelines'
    AIC_partial_); ties: "efron" or "breslow"; strata: "node". The null log-likelihood and
    the likelihood-ratio test are not given, and concordance is None: neither is computed
    (fedtre.analyses.cox explains why).
    """

    n: int
    events: int
    log_likelihood: float | None
    aic_partial: float | None
    ties: str
    strata: str
    iterations: int
    converged: bool
    concordance: float | None = None
    kind: str = "cox"

    @classmethod
    def from_payload(cls, model: Mapping[str, Any]) -> CoxFit:
        def number(key: str) -> float | None:
            value = model.get(key)
            return None if value is None else float(value)

        return cls(
            n=int(model.get("n") or 0),
            events=int(model.get("events") or 0),
            log_likelihood=number("log_likelihood"),
            aic_partial=number("aic_partial"),
            ties=str(model.get("ties") or ""),
            strata=str(model.get("strata") or ""),
            iterations=int(model.get("iterations") or 0),
            converged=bool(model.get("converged")),
        )

    def lines(self) -> list[str]:
        """The figures as readable lines, for `fedtre result`."""
        state = "converged" if self.converged else "did NOT converge"
        return [
            f"Cox proportional hazards, stratified by {self.strata} ({self.ties} ties): "
            f"n = {self.n}, events = {self.events}",
            f"log partial likelihood = {_g(self.log_likelihood)}, partial AIC = "
            f"{_g(self.aic_partial)}, {state} after {self.iterations} iterations",
            "not given: the likelihood-ratio test (it needs the likelihood at beta = 0, "
            "which nearly states the numbers at risk) and concordance (it needs pairs of "
            "records across TREs)",
        ]


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


# -- the node's partial likelihood ----------------------------------------------------------


def _check_event(
    conn: sa.Connection,
    event: sa.ColumnElement[Any],
    conditions: Sequence[sa.ColumnElement[bool]],
    name: str,
) -> None:
    bad = sa.select(sa.func.count()).where(*conditions, sa.and_(event != 0.0, event != 1.0))
    if conn.execute(bad).scalar_one():
        raise InvalidRequest(
            f"the event column {name!r} has values at this node other than 0 and 1; "
            "choose a 0/1 or boolean event column"
        )


@dataclass(frozen=True)
class _Layout:
    """Where each per-event-time sum sits in a row of _event_times' query."""

    size: int

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(a, b) for a in range(self.size) for b in range(a, self.size)]

    def pair_columns(self) -> tuple[list[int], list[int]]:
        """The two factors' positions of each entry of the information's upper triangle."""
        return [a for a, _ in self.pairs], [b for _, b in self.pairs]

    def slices(self) -> dict[str, slice]:
        p, q = self.size, len(self.pairs)
        widths = {"d": 1, "r0": 1, "r1": p, "r2": q, "e0": 1, "e1": p, "e2": q, "xs": p, "es": 1}
        out, at = {}, 0
        for name, width in widths.items():
            out[name] = slice(at, at + width)
            at += width
        return out


def _event_times(
    conn: sa.Connection,
    time: sa.ColumnElement[Any],
    event: sa.ColumnElement[Any],
    columns: Sequence[sa.ColumnElement[Any]],
    eta: sa.ColumnElement[Any],
    shift: float,
    conditions: Sequence[sa.ColumnElement[bool]],
) -> Iterator[np.ndarray]:
    """Yield, in blocks, one row per distinct event time: its number of events d, the
    risk-set sums of w, x w, x x' w (records with time >= t), the same sums over its
    events, and its events' sums of x and of x'b - shift (layout: _Layout).

    All in the engine: the records become one row per distinct time (GROUP BY), window
    sums from the latest time down give the risk sets, and only event times are read.
    """
    layout = _Layout(len(columns))
    size, pairs = layout.size, layout.pairs
    centred = eta - sa.literal(shift, sa.Double)
    exponent = sa.case((centred < MIN_EXPONENT, sa.literal(MIN_EXPONENT, sa.Double)), else_=centred)
    records = (
        sa.select(
            time.label("rt"),
            event.label("re"),
            centred.label("reta"),
            sa.func.exp(exponent).label("rw"),
            *(c.label(f"rx{i}") for i, c in enumerate(columns)),
        )
        .where(*conditions)
        .cte("cox_records")  # a CTE's name shadows a table's: ours is unlikely to be one
    )
    # Computed once per record: an engine that inlined it would evaluate exp(x'b) again
    # for each of the O(p^2) sums below (SQLite and PostgreSQL do; MATERIALIZED stops them).
    records = materialized(records)
    # The aggregates as SQL text over the subqueries' own column names: only our names
    # and indices, no value from a user; a text keeps the statement small (an expression
    # tree of p^2 sums costs Python more than the engine's query), as in max_leverage.
    r = records.name
    x = [f"{r}.rx{a}" for a in range(size)]
    sums = {
        "d": f"{r}.re",
        "s0": f"{r}.rw",
        **{f"s1_{a}": f"{x[a]} * {r}.rw" for a in range(size)},
        **{f"s2_{a}_{b}": f"{x[a]} * {x[b]} * {r}.rw" for a, b in pairs},
        "e0": f"{r}.re * {r}.rw",
        **{f"e1_{a}": f"{r}.re * {x[a]} * {r}.rw" for a in range(size)},
        **{f"e2_{a}_{b}": f"{r}.re * {x[a]} * {x[b]} * {r}.rw" for a, b in pairs},
        **{f"xs_{a}": f"{r}.re * {x[a]}" for a in range(size)},
        "es": f"{r}.re * {r}.reta",
    }
    by_time = (
        sa.select(
            records.c.rt,
            *(sa.literal_column(f"sum({e})", sa.Double).label(n) for n, e in sums.items()),
        )
        .select_from(records)
        .group_by(records.c.rt)
        .subquery("by_time")
    )
    # Risk sets: the sums of every time at or after each one, from the latest time down.
    risk = ["s0", *(f"s1_{a}" for a in range(size)), *(f"s2_{a}_{b}" for a, b in pairs)]
    events = ["e0", *(f"e1_{a}" for a in range(size)), *(f"e2_{a}_{b}" for a, b in pairs)]
    events += [*(f"xs_{a}" for a in range(size)), "es"]
    later_first = "OVER (ORDER BY by_time.rt DESC)"
    risk_sets = (
        sa.select(
            by_time.c.d,
            *(
                sa.literal_column(f"sum(by_time.{n}) {later_first}", sa.Double).label(f"r_{n}")
                for n in risk
            ),
            *(by_time.c[n] for n in events),
        )
        .select_from(by_time)
        .subquery("risk_sets")
    )
    query = sa.select(*risk_sets.c).where(risk_sets.c.d > 0)
    result = conn.execution_options(yield_per=CHUNK_TIMES).execute(query)
    for rows in result.partitions():
        yield np.array(list(map(tuple, rows)), dtype=float)


class _PartialLikelihood:
    """The log partial likelihood, score and information summed over event-time blocks.

    At an event time with d events, risk-set sums R0, R1, R2 and event sums E0, E1, E2:
    Breslow adds d times (R1 / R0) and (R2 / R0 - R1 R1' / R0^2); Efron adds, for
    l = 0..d-1 and f = l / d, the same with A = R - f E in place of R.
    """

    def __init__(self, size: int, ties: str) -> None:
        self.layout = _Layout(size)
        self.ties = ties
        self.score = np.zeros(size)
        self._info = np.zeros(len(self.layout.pairs))
        self.log_likelihood = 0.0

    def add(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        s = self.layout.slices()
        d = np.rint(block[:, s["d"]][:, 0]).astype(np.int64)
        self.score += block[:, s["xs"]].sum(axis=0)
        self.log_likelihood += float(block[:, s["es"]].sum())
        if self.ties == "breslow":
            rows = np.arange(len(block))
            self._terms(block, s, rows, np.zeros(len(block)), d.astype(float))
            return
        # Efron: the l-th tied event of each time (l = 0, 1, ...) at f = l / d, a pass per
        # rank, so memory stays that of the block however many events are tied
        for rank in range(int(d.max(initial=0))):
            rows = np.nonzero(d > rank)[0]
            self._terms(block, s, rows, rank / d[rows], np.ones(len(rows)))

    def _terms(
        self,
        block: np.ndarray,
        s: Mapping[str, slice],
        rows: np.ndarray,
        f: np.ndarray,
        weight: np.ndarray,
    ) -> None:
        b = block[rows]
        a0 = b[:, s["r0"]][:, 0] - f * b[:, s["e0"]][:, 0]
        a1 = b[:, s["r1"]] - f[:, None] * b[:, s["e1"]]
        a2 = b[:, s["r2"]] - f[:, None] * b[:, s["e2"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = a1 / a0[:, None]
            self.log_likelihood -= float(np.sum(weight * np.log(a0)))
            self.score -= (weight[:, None] * mean).sum(axis=0)
            first, second = self.layout.pair_columns()
            cross = a2 / a0[:, None] - mean[:, first] * mean[:, second]
            self._info += (weight[:, None] * cross).sum(axis=0)

    def information(self) -> np.ndarray:
        size = self.layout.size
        matrix = np.zeros((size, size))
        for value, (a, b) in zip(self._info, self.layout.pairs, strict=True):
            matrix[a, b] = matrix[b, a] = value
        return matrix

    def finite(self) -> bool:
        return bool(
            np.all(np.isfinite(self.score))
            and np.all(np.isfinite(self._info))
            and math.isfinite(self.log_likelihood)
        )


# -- at the coordinator -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Pooled:
    n: int
    events: int
    score: np.ndarray
    information: np.ndarray
    log_likelihood: float


def _pooled(
    design: GlobalDesign, payloads: Mapping[str, Mapping[str, Any]], *, start: bool
) -> _Pooled:
    """Sum the nodes' score, information and log-likelihood in the model's terms."""
    full = len(design.full)
    kept = list(design.kept)
    info = np.zeros((full, full))
    score = np.zeros(full)
    n = events = 0
    ll = 0.0
    for node, payload in payloads.items():
        n += as_count(payload.get("n"), node, "n") or 0
        events += as_count(payload.get("events"), node, "events") or 0
        if start:
            positions = [int(i) for i in expand(design, payload.get("basis"), node)]
        else:
            positions = kept
            basis = payload.get("basis")
            if not isinstance(basis, list) or len(basis) != len(kept):
                raise malformed(node, "its design columns do not match the model's terms")
        size = len(positions)
        info[np.ix_(positions, positions)] += as_matrix(
            payload.get("information"), size, node, "the information matrix"
        )
        score[positions] += as_vector(payload.get("score"), size, node, "the score")
        ll += as_float(payload.get("log_likelihood"), node, "the log-likelihood") or 0.0
    return _Pooled(n, events, score[kept], info[np.ix_(kept, kept)], ll)


def _check_size(events: int, parameters: int) -> None:
    if events <= parameters:
        raise InvalidRequest(
            f"the model has {parameters} parameters but only {events} events; use fewer covariates"
        )


def _result(
    p: Mapping[str, Any],
    terms: Sequence[str],
    beta: np.ndarray,
    cov: np.ndarray,
    pooled: _Pooled,
    iteration: int,
    converged: bool,
) -> dict[str, Any]:
    """The combined result. No figure at beta = 0 is given (the null log-likelihood, hence
    the likelihood-ratio test): there every weight is 1, so exp(-ll0) is the product of the
    numbers at risk at the event times, integers that an exact ll0 would nearly pin down."""
    table = coefficient_table(terms, beta, cov, df=None)

    def exp_of(values: list[float | None]) -> list[float | None]:
        return [None if v is None else finite_or_none(math.exp(min(v, 700.0))) for v in values]

    ll = pooled.log_likelihood
    model = {
        "kind": "cox",
        "ties": p["ties"],
        "strata": "node",
        "n": pooled.n,
        "events": pooled.events,
        "log_likelihood": finite_or_none(ll),
        "aic_partial": finite_or_none(-2.0 * ll + 2.0 * len(terms)),
        "iterations": iteration,
        "converged": converged,
        "concordance": None,
    }
    result = {
        "time": p["time"],
        "event": p["event"],
        **table,
        "hazard_ratio": exp_of(table["coef"]),
        "hr_ci_lower": exp_of(table["ci_lower"]),
        "hr_ci_upper": exp_of(table["ci_upper"]),
        "model": model,
    }
    if not converged:
        result["warning"] = (
            f"the fit did not converge within {p['max_iter']} iterations; the estimates are "
            "the last iteration's (raise max_iter, or simplify the model)"
        )
    return result
