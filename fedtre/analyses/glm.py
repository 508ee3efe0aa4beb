"""The glm analysis: logistic (binomial, logit) and Poisson (log link) regression over rounds.

Parameters: `outcome`, `covariates` (list; fedtre.analyses.design), `family` ("binomial"
or "poisson"), optional `offset` (a numeric column or derived variable added to the linear
predictor on the log scale, e.g. "log(follow_up_days)") or, for Poisson, `exposure` (as in
statsmodels: exposure="follow_up_days" is offset="log(follow_up_days)"), `filter`,
`levels`, `max_iter` (default 25, at most 100) and `tol` (default 1e-10). Every column
may be a derived variable (fedtre.analyses.expressions).

The fit is federated iteratively reweighted least squares (Newton-Raphson for these
canonical links), one round of tasks per iteration:

- round 1 starts from the data, as statsmodels does: mu = (y + 0.5) / 2 for binomial,
  mu = (y + mean(y)) / 2 for Poisson, where statsmodels' pooled mean is replaced by the
  node's own (the pooled mean would cost a round; the start only affects how many
  rounds the fit takes, never where it converges): each node returns X'WX and X'Wz over its own design columns
  (every level it has, reference included) and reports which levels it has; the
  coordinator takes the union of the levels (fedtre.analyses.design), maps each node's
  sums into the agreed design, and solves for beta_1;
- round k > 1 sends beta_{k-1} and the agreed levels; each node's data engine computes,
  over its complete cases at that beta, the information X'WX, X'Wz (z the working
  response) and the deviance in one aggregate statement (fedtre.analyses.glm_sql: no
  record leaves the engine); the coordinator solves beta_k = (sum X'WX)^-1 (sum X'Wz).
- It stops when every coefficient moved by at most tol x max(1, |coefficient|) in the
  last step, or after max_iter rounds (converged = false). A round whose deviance rose or
  was not finite is retried at half the step. The reported standard errors are the
  square roots of diag((sum X'WX)^-1) at the final round's beta, which differs from the
  reported coefficients by less than tol: they equal the pooled maximum-likelihood fit's.

Each round's output is checked at the node by fedtre.disclosure.models.check_model before
any matrix leaves (residual degrees of freedom, parameters at most a third of the
records, and at least `threshold` records at every level of the binary outcome (both
levels, so a node without events counts 0 there when zeros are disclosive) and at every
level of each categorical covariate the node has). A level of the agreed design that a
node lacks is not a zero cell of that node (docs/disclosure.md: a level that does not
occur at a node is not listed by it; its round-1 report already said which levels it
has): counting it would block round 2 after round 1 had released, so every round applies
the same rules to the same records. A failing round is BLOCKED: nothing leaves.

Dominance: every round also applies the NK and p% rules to the outcome (of a Poisson
model; a binary outcome is judged by its level counts) and to each numeric covariate
over the node's model records, on absolute values (fedtre.disclosure.models); a
dominated column blocks the round.

- node payload of a round (kinds of fedtre.disclosure.release, declared in
  released_fields): {"n": count, "covariates": [[spec, kind, type, [level labels]]...],
  "basis": [[spec, level label | null], ...], "xtwx": [[model...]], "xtwz": [model...],
  "deviance": model, "ll_const": model, "finite": model (1.0, or 0.0 when beta overflowed
  this node's linear predictor: then only n and finite are sent)} (intercept first in
  xtwx/xtwz). `n` is the released count (threshold, then cell-key noise or rounding, with
  the cell key of the model's records, so every round releases the same n); the model
  statistics are exact, for the coordinator's combination, and the researcher does not
  receive them (release.researcher_view).
- combined: fedtre.analyses.regression's table with z statistics and model figures
  (family, link, n, df_model, df_resid, deviance, log_likelihood, aic, iterations,
  converged), plus "nodes".

Which figures are exact and which are perturbed (docs/disclosure.md, "linear_regression
and glm"): the coefficients, standard errors, z statistics, p values and intervals
(normal quantiles: no degrees of freedom), the deviance, log-likelihood and AIC come from
the exact X'WX, X'Wz, deviance and ll_const, so they equal the pooled maximum-likelihood
fit; none of them is a count. `n` is the sum of the nodes' released n and `df_resid` is
that n less the parameters, so no figure states the exact number of records. (The fit
itself never uses n: the coordinator's size check uses the released n.)
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import (
    NUMERIC_TYPES,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
)
from fedtre.analyses.design import (
    CATEGORICAL,
    DESIGN_FIELDS,
    GlobalDesign,
    ModelRecords,
    as_matrix,
    as_vector,
    basis_expr,
    column_param_name,
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
from fedtre.analyses.expressions import normalise_column
from fedtre.analyses.glm_sql import round_sums
from fedtre.analyses.iterative import RoundStep, split_round
from fedtre.analyses.linear_regression import scaled_inverse
from fedtre.analyses.newton import NewtonAnalysis, halved, iteration_params, newton_step
from fedtre.analyses.params import (
    check_keys,
    column_problems,
    complete_cohort,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import as_count, as_float, malformed
from fedtre.analyses.regression import coefficient_table, regression_frame
from fedtre.disclosure import release
from fedtre.disclosure.cellkey import record_key_of
from fedtre.disclosure.models import check_model, released_count, released_design
from fedtre.disclosure.release import Kind
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"outcome": "diabetic", "covariates": ["age", "sex"], "family": "binomial"}'
FAMILIES = ("binomial", "poisson")
# A round whose deviance rises (or overflows) is retried at half the step, at most this often in a row.
# A binomial deviance below this per record at the iteration cap means the fit is running
# off to a perfect separation of the outcomes (a fit of even a 0.1% outcome has ~0.016).
SEPARATION_DEVIANCE = 0.005


def _overflow_message(offset: str | None) -> str:
    """Why the first step overflowed: an offset not on the log scale, or the scale of the data."""
    if offset is not None and not offset.startswith("log("):
        return (
            f"the fit overflowed in its first step: the offset must be on the log scale: use "
            f'log({offset}) as the offset, or exposure="{offset}"'
        )
    return (
        "the fit overflowed in its first step: exp of the linear predictor is too large at "
        "some node; rescale the covariates (e.g. age in decades, income in thousands)"
    )


class GlmAnalysis(NewtonAnalysis):
    """Binomial (logit) and Poisson (log) regression, fitted over several rounds."""

    name = "glm"
    list_params = frozenset({"covariates"})
    description = "Logistic or Poisson regression by federated IRLS: coefficients, SE, z, p, CIs."
    # The payload of every round (round 1 and later ones have the same shape).
    released_fields = {
        "n": Kind.COUNT,
        **{path: Kind(kind) for path, kind in DESIGN_FIELDS.items()},
        "xtwx.*.*": Kind.MODEL,
        "xtwz.*": Kind.MODEL,
        "deviance": Kind.MODEL,
        "ll_const": Kind.MODEL,
        "finite": Kind.MODEL,
    }

    # -- parameters ------------------------------------------------------------------

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("outcome", "family"),
            optional=("covariates", "offset", "exposure", "filter", "levels", "max_iter", "tol"),
            example=_EXAMPLE,
        )
        outcome = column_param_name(p, "outcome", analysis=self.name, example=_EXAMPLE)
        if outcome is None:
            raise InvalidRequest(f"glm needs an 'outcome' column, e.g. {_EXAMPLE}")
        family = p.get("family")
        if family not in FAMILIES:
            raise InvalidRequest(
                f"glm parameter 'family' must be one of {list(FAMILIES)} (logit and log links), "
                f"e.g. {_EXAMPLE}"
            )
        covariates = covariates_param(p, analysis=self.name, example=_EXAMPLE)
        offset = column_param_name(p, "offset", analysis=self.name, example=_EXAMPLE)
        exposure = column_param_name(p, "exposure", analysis=self.name, example=_EXAMPLE)
        if exposure is not None:
            # statsmodels' exposure: the offset is its log (a record without a positive
            # exposure has no log, so it is left out like a missing value).
            if offset is not None:
                raise InvalidRequest(
                    "glm takes 'offset' or 'exposure', not both: exposure=x is offset=log(x)"
                )
            if family != "poisson":
                raise InvalidRequest("glm's 'exposure' is for the poisson family")
            offset = normalise_column(f"log({exposure})", what="glm parameter 'exposure'")
        columns = [parse_covariate(c).column for c in covariates]
        if outcome in columns or outcome == offset:
            raise InvalidRequest(f"glm: the outcome {outcome!r} is also a covariate or the offset")
        if offset is not None and offset in columns:
            raise InvalidRequest(f"glm: the offset {offset!r} is also a covariate")
        return {
            "outcome": outcome,
            "family": family,
            "covariates": covariates,
            "offset": offset,
            "filter": filter_param(p),
            "levels": levels_param(p, covariates, analysis=self.name),
            **iteration_params(p, self.name),
        }

    def _columns(self, p: Mapping[str, Any]) -> list[str]:
        columns = [p["outcome"], *(parse_covariate(c).column for c in p["covariates"])]
        return columns + ([p["offset"]] if p["offset"] else [])

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's complete cases: the records the model is fitted on."""
        p = self.validate(split_round(params)[0])
        return complete_cohort(p["filter"], self._columns(p))

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(split_round(params)[0])
        outcome_types = (
            frozenset({"integer", "boolean"}) if p["family"] == "binomial" else NUMERIC_TYPES
        )
        return (
            column_problems(p["outcome"], role="outcome", schema=schema, allowed=outcome_types)
            + covariate_problems(p["covariates"], schema)
            + column_problems(p["offset"], role="offset", schema=schema, allowed=NUMERIC_TYPES)
            + schema_filter_problems(p["filter"], schema)
        )

    # -- at the node -------------------------------------------------------------------

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        job_params, round_params = split_round(params)
        p = self.validate(job_params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        r = self.validate_round(p, round_params) if round_params else {}
        family = p["family"]
        table, types = source.table, source.schema.columns
        specs = p["covariates"]
        conditions = complete_cases(table, self._columns(p), p["filter"])
        y_expr = numeric_expr(table, p["outcome"], types[p["outcome"]])
        record_key = record_key_of(source)  # before connecting: see model_records
        checks_key = _checks_key(source, p)
        # Round 1 reads the checks afresh; later rounds reuse what it (or a later round) read
        cached = _cached_checks(checks_key, source) if r else None
        reused = cached is not None
        with source.engine.connect() as conn:
            if cached is not None:
                counts = cached.counts
            else:
                counts = local_levels(conn, table, specs, types, conditions)
                _check_outcome(conn, family, y_expr, conditions, p["outcome"])
            if r:
                levels = dict(r["levels"])
                for spec, present in counts.items():
                    unknown = set(present) - set(levels.get(spec, ()))
                    if unknown:
                        raise InvalidRequest(
                            f"covariate {spec!r} has a level at this node that the agreed design "
                            "lacks (did the data change during the job?); submit the job again"
                        )
                basis = node_basis(specs, types, levels, drop_reference=True)
                beta = np.asarray(r["beta"], dtype=float)
                if len(beta) != len(basis) + 1:
                    raise InvalidRequest("glm: the round's beta does not match the model's terms")
            else:
                levels = {
                    s: order_levels(c, types[parse_covariate(s).column]) for s, c in counts.items()
                }
                basis = node_basis(specs, types, levels, drop_reference=False)
                beta = None
            offset = (
                numeric_expr(table, p["offset"], types[p["offset"]])
                if p["offset"]
                else sa.literal(0.0, sa.Double)
            )
            columns = [basis_expr(table, b, types) for b in basis]
            # the outcome (of a count model) and each numeric covariate, for dominance
            numeric = {p["outcome"]: y_expr} if family == "poisson" else {}
            for b, e in zip(basis, columns, strict=True):
                if b.label is None:
                    numeric[parse_covariate(b.spec).column] = e
            if cached is not None:
                records = cached.records
            else:
                records = model_records(
                    conn, record_key, numeric, conditions, extra=[sa.func.avg(y_expr)]
                )
                cached = _NodeChecks(source.engine, counts, records, {})
                _store_checks(checks_key, cached)
            # the leverage depends on the design: every level in round 1, the agreed ones after
            design_key = json.dumps(r.get("levels"), sort_keys=True)
            leverage = cached.leverage.get(design_key, _UNREAD)
            if leverage is _UNREAD:
                leverage = max_leverage(conn, columns, conditions, n=records.n)
                with _LATER_ROUNDS_LOCK:
                    cached.leverage[design_key] = leverage
            start_mean = 0.0
            if beta is None and family == "poisson":
                mean = records.extra[0]
                start_mean = 0.0 if mean is None else float(mean)
            sums = round_sums(
                conn,
                family=family,
                outcome=y_expr,
                offset=offset,
                columns=columns,
                conditions=conditions,
                beta=beta,
                start_mean=start_mean,
            )
        if reused and sums.n != records.n:
            # the records changed since the checks were read: read them again, so that no
            # release pairs this round's records with another set's cell key or top values
            _forget_checks(checks_key)
            return self.compute(params, source)
        return {
            "n": sums.n,
            "key": records.key,
            "leverage": leverage,
            "magnitudes": records.magnitudes,
            "covariates": covariate_report(specs, types, counts),
            "basis": [b.key() for b in basis],
            "xtwx": sums.xtwx.tolist(),
            "xtwz": sums.xtwz.tolist(),
            "deviance": sums.deviance,
            "ll_const": sums.ll_const,
            "finite": sums.finite(),
            "level_counts": counts,
            "outcome_counts": {"0": sums.n - sums.events, "1": sums.events}
            if family == "binomial"
            else {},
            "start": beta is None,
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Release the round's sums only when every model rule passes (check_model)."""
        p = self.validate(split_round(params)[0])
        levels: dict[str, dict[str | None, int]] = {}
        if raw["outcome_counts"]:
            levels[p["outcome"]] = {k: int(v) for k, v in raw["outcome_counts"].items()}
        for spec, counts in raw["level_counts"].items():
            levels[spec] = {k: int(v) for k, v in counts.items()}
        if not policy.zeros_disclosive:
            # a level the node lacks is not a cell it could disclose
            levels = {v: {k: n for k, n in c.items() if n > 0} for v, c in levels.items()}
        parameters = len(raw["xtwz"])
        if raw["start"]:
            parameters -= sum(1 for c in raw["covariates"] if c[1] == CATEGORICAL and c[3])
        n = int(raw["n"])
        checked = check_model(
            records=n,
            parameters=parameters,
            levels=levels,
            policy=policy,
            magnitudes=raw["magnitudes"],
            numeric_covariates=sum(1 for c in raw["covariates"] if c[1] != CATEGORICAL),
            leverage=raw.get("leverage"),
        )
        if not checked.passed:
            return NodeOutput(Outcome.BLOCKED, {}, checked.rules)
        released_n, count_rules = released_count(n, raw["key"], policy)
        rules = checked.rules + count_rules
        if released_n is None:
            return NodeOutput(Outcome.BLOCKED, {}, rules)
        if not raw["finite"]:
            # beta overflowed this node's linear predictor: say so, release no figures
            return NodeOutput(
                Outcome.RELEASED, {"n": released_n, "finite": release.model(0.0)}, rules
            )
        covariates, basis = released_design(raw["covariates"], raw["basis"])
        payload = {
            "n": released_n,
            "covariates": covariates,
            "basis": basis,
            "xtwx": release.models(raw["xtwx"]),
            "xtwz": release.models(raw["xtwz"]),
            "deviance": release.model(raw["deviance"]),
            "ll_const": release.model(raw["ll_const"]),
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
        if state.get("design") is None:
            design = unify_design(
                p["covariates"],
                {node: payload.get("covariates") for node, payload in payloads.items()},
                p["levels"],
            )
            info, score, n, _, _ = _pooled(design, payloads, start=True)
            _check_size(n, len(design.terms))
            beta = newton_step(info, score, design.terms)
            next_state = {
                "iteration": iteration,
                "design": design.to_json(),
                "beta": beta.tolist(),
                "n": n,
                "accepted_beta": None,
                "accepted_deviance": None,
                "halvings": 0,
            }
            return RoundStep(next_state, False, {"iteration": iteration})
        design = GlobalDesign.from_json(state["design"])
        beta = np.asarray(state["beta"], dtype=float)
        # 1.0 (a model value) or, from an older agent, true
        finite = all(payload.get("finite") == 1 for payload in payloads.values())
        deviance = None
        if finite:
            info, score, n, deviance, ll_const = _pooled(design, payloads, start=False)
        previous = state.get("accepted_deviance")
        worse = deviance is None or (
            previous is not None and deviance > previous * (1.0 + 1e-12) + 1e-12
        )
        if worse and state.get("accepted_beta") is not None:
            next_state = halved(
                state,
                iteration,
                p["max_iter"],
                "the fit diverged (the deviance kept rising); the model may be separated "
                "(a covariate predicts the outcome perfectly): remove or merge covariates",
            )
            return RoundStep(next_state, False, {"iteration": iteration, "deviance": previous})
        if deviance is None:
            raise InvalidRequest(_overflow_message(p["offset"]))
        new_beta = newton_step(info, score, design.terms)
        step = np.abs(new_beta - beta) / np.maximum(1.0, np.abs(new_beta))
        converged = bool(np.all(step <= p["tol"]))
        if not (converged or iteration >= p["max_iter"]):
            next_state = {
                **state,
                "iteration": iteration,
                "beta": new_beta.tolist(),
                "n": n,
                "accepted_beta": beta.tolist(),
                "accepted_deviance": deviance,
                "halvings": 0,
            }
            return RoundStep(next_state, False, {"iteration": iteration, "deviance": deviance})
        cov = scaled_inverse(info, list(design.terms))
        parameters = len(design.terms)
        llf = ll_const - deviance / 2.0
        model = {
            "kind": "glm",
            "family": p["family"],
            "link": "logit" if p["family"] == "binomial" else "log",
            "n": n,
            "df_model": float(parameters - 1),
            "df_resid": float(n - parameters),
            "scale": 1.0,
            "deviance": finite_or_none(deviance),
            "log_likelihood": finite_or_none(llf),
            "aic": finite_or_none(-2.0 * llf + 2.0 * parameters),
            "iterations": iteration,
            "converged": converged,
        }
        result = {
            "outcome": p["outcome"],
            **coefficient_table(design.terms, new_beta, cov, df=None),
            "model": model,
        }
        if not converged:
            result["warning"] = (
                f"the fit did not converge within {p['max_iter']} iterations; the estimates are "
                "the last iteration's (raise max_iter, or simplify the model)"
            )
            if p["family"] == "binomial" and deviance < SEPARATION_DEVIANCE * n:
                result["warning"] += (
                    "; the deviance is almost 0, so the covariates probably separate the "
                    "outcomes perfectly (separation): the estimates then run off to infinity and "
                    "mean nothing; remove or merge the covariate that predicts the outcome"
                )
        final = {**state, "iteration": iteration, "beta": new_beta.tolist(), "n": n}
        return RoundStep(final, True, {"iteration": iteration, "deviance": deviance}, result)

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return the coefficient table indexed by term; a node's round payload is not tabular."""
        if "terms" not in payload:
            return None
        return regression_frame(payload)


@dataclass(frozen=True)
class _NodeChecks:
    """What a job's rounds' disclosure checks read, the same at every beta of a job: the
    level counts and the records (cell key, top values) as round 1 read them, and the
    largest leverage per design (JSON of the agreed levels; "null" for round 1's)."""

    engine: sa.Engine
    counts: Any
    records: ModelRecords
    leverage: dict[str, Any]


# The checks of a job's rounds (same records; only beta and, after round 1, the design
# change), kept so that later rounds do not rescan the records for them; bounded.
_LATER_ROUNDS: OrderedDict[str, _NodeChecks] = OrderedDict()
_LATER_ROUNDS_LOCK = threading.Lock()
MAX_CACHED_CHECKS = 64
_UNREAD = object()


def _checks_key(source: DataSource, p: Mapping[str, Any]) -> str:
    return json.dumps([id(source.engine), str(source.table), p], sort_keys=True, default=str)


def _cached_checks(key: str, source: DataSource) -> _NodeChecks | None:
    with _LATER_ROUNDS_LOCK:
        found = _LATER_ROUNDS.get(key)
    # the engine itself, not its id (an id is reused once an engine is collected)
    return found if found is not None and found.engine is source.engine else None


def _forget_checks(key: str) -> None:
    with _LATER_ROUNDS_LOCK:
        _LATER_ROUNDS.pop(key, None)


def _store_checks(key: str, checks: _NodeChecks) -> None:
    with _LATER_ROUNDS_LOCK:
        _LATER_ROUNDS[key] = checks
        while len(_LATER_ROUNDS) > MAX_CACHED_CHECKS:
            _LATER_ROUNDS.popitem(last=False)


def _check_outcome(
    conn: sa.Connection,
    family: str,
    y: sa.ColumnElement[Any],
    conditions: list[sa.ColumnElement[bool]],
    name: str,
) -> None:
    if family == "binomial":
        bad = sa.and_(y != 0.0, y != 1.0)
        need = "0 or 1 (binomial)"
    else:
        bad = y < 0.0
        need = "counts of 0 or more (Poisson)"
    found = conn.execute(sa.select(sa.func.count()).where(*conditions, bad)).scalar_one()
    if found:
        raise InvalidRequest(
            f"the outcome {name!r} has values at this node that are not {need}; "
            "choose another outcome or family"
        )


def _pooled(
    design: GlobalDesign, payloads: Mapping[str, Mapping[str, Any]], *, start: bool
) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    """Sum the nodes' X'WX and X'Wz in the model's terms; return them with n, deviance, ll_const."""
    full = len(design.full) + 1  # intercept, then the design's full basis
    kept = [0, *(i + 1 for i in design.kept)]
    info = np.zeros((full, full))
    score = np.zeros(full)
    n, deviance, ll_const = 0, 0.0, 0.0
    for node, payload in payloads.items():
        count = as_count(payload.get("n"), node, "n") or 0
        n += count
        if start:
            positions = [0, *(int(i) + 1 for i in expand(design, payload.get("basis"), node))]
        else:
            positions = kept
            basis = payload.get("basis")
            if not isinstance(basis, list) or len(basis) != len(kept) - 1:
                raise malformed(node, "its design columns do not match the model's terms")
        size = len(positions)
        info[np.ix_(positions, positions)] += as_matrix(payload.get("xtwx"), size, node, "X'WX")
        score[positions] += as_vector(payload.get("xtwz"), size, node, "X'Wz")
        deviance += as_float(payload.get("deviance"), node, "the deviance") or 0.0
        ll_const += as_float(payload.get("ll_const"), node, "the log-likelihood") or 0.0
    return info[np.ix_(kept, kept)], score[kept], n, deviance, ll_const


def _check_size(n: int, parameters: int) -> None:
    if n <= parameters:
        raise InvalidRequest(
            f"the model has {parameters} parameters but only {n} records; use fewer covariates"
        )
