"""The linear_regression analysis: ordinary least squares in one round, equal to the pooled fit.

Parameters: `outcome` (numeric column), `covariates` (list; see fedtre.analyses.design for
numeric and categorical covariates and term names), optional `filter`, optional `levels`.

Each node computes, in its own SQL engine, the sufficient statistics of its complete
cases over every design column (numeric covariates and one indicator per level it has,
reference included) and the outcome: the count n, the column means, and the centred
cross-products C = sum (x - mean)(x - mean)' (two passes: means, then centred sums; the
numerically stable form of X'X, X'y and y'y). No row reaches Python.

- node payload (kinds of fedtre.disclosure.release, declared in released_fields):
  {"n": count, "n_model": model, "covariates": [[spec, kind, type, [level labels]], ...],
   "basis": [[spec, level label | null], ...], "means": [model...], "cross": [[model...]]}
  (means and cross run over the basis columns, then the outcome). `n` is the released
  count (threshold, then cell-key noise or rounding, with the cell key of the model's
  records); `n_model` (the intercept's entry of X'X, i.e. the exact number of records),
  `means` and `cross` are the exact model statistics for the coordinator's pooling, which
  the researcher does not receive (release.researcher_view). Released only when
  fedtre.disclosure.models.check_model passes (residual degrees of freedom, parameters at
  most a third of the records, every level of a categorical covariate in at least
  `threshold` records, no dominated outcome or numeric covariate); otherwise BLOCKED,
  nothing leaves.
- combined: fedtre.analyses.regression's coefficient table with t statistics and model
  figures, plus "nodes" and "withheld_by".

Which figures are exact and which are perturbed (docs/disclosure.md, "linear_regression
and glm"): the coefficients, standard errors and t statistics are those of the pooled fit,
computed from the exact statistics (so they equal statsmodels' on the pooled records).
Every count the researcher sees comes from the released n's: `n` is the sum of the nodes'
released n; `df_resid` = n - parameters; p values and confidence intervals use the t
distribution on that df_resid; R-squared and adjusted R-squared are derived from the F
statistic and that df_resid (R2 = k F / (k F + df_resid)); the F statistic itself is exact
(for one covariate it is t squared). The residual variance (`scale`), residual sum of
squares, log-likelihood and AIC are not given (None): with the exact standard errors each
would give the exact n (in an intercept-only model se^2 = rss / (n (n - 1))). Under a
policy that releases counts exactly (rounding base 1) every figure equals the pooled fit.

The coordinator takes the union of the levels, maps each node's columns into it (a level
absent at a node is an all-zero column there), pools the cross-products exactly (Chan's
formula in matrix form, weighted by the exact n_model), drops each covariate's reference
level and solves the normal equations on the correlation-scaled matrix. A BLOCKED node
withheld its part of the model, so then no coefficient is combined (never a fit on the
other nodes presented as pooled); REFUSED and FAILED nodes are left out and listed under
nodes.excluded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import (
    NUMERIC_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
)
from fedtre.analyses.design import (
    CATEGORICAL,
    DESIGN_FIELDS,
    CrossProducts,
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
    pool_cross_products,
    unify_design,
)
from fedtre.analyses.params import (
    check_keys,
    column_problems,
    complete_cohort,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import as_count, partition
from fedtre.analyses.regression import coefficient_table, regression_frame, withheld_table
from fedtre.disclosure import release
from fedtre.disclosure.cellkey import record_key_of
from fedtre.disclosure.models import check_model, released_count, released_design
from fedtre.disclosure.release import Kind
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"outcome": "sbp", "covariates": ["age", "sex", "C(deprivation)"]}'


class LinearRegressionAnalysis(Analysis):
    """Ordinary least squares of a numeric outcome on covariates."""

    name = "linear_regression"
    list_params = frozenset({"covariates"})
    description = "OLS regression: coefficients, standard errors, t, p values, 95% CIs, R-squared."
    released_fields = {
        "n": Kind.COUNT,
        "n_model": Kind.MODEL,
        **{path: Kind(kind) for path, kind in DESIGN_FIELDS.items()},
        "means.*": Kind.MODEL,
        "cross.*.*": Kind.MODEL,
    }

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("outcome",),
            optional=("covariates", "filter", "levels"),
            example=_EXAMPLE,
        )
        outcome = column_param_name(p, "outcome", analysis=self.name, example=_EXAMPLE)
        if outcome is None:
            raise InvalidRequest(f"{self.name} needs an 'outcome' column, e.g. {_EXAMPLE}")
        covariates = covariates_param(p, analysis=self.name, example=_EXAMPLE)
        if outcome in {parse_covariate(c).column for c in covariates}:
            raise InvalidRequest(f"{self.name}: the outcome {outcome!r} is also a covariate")
        return {
            "outcome": outcome,
            "covariates": covariates,
            "filter": filter_param(p),
            "levels": levels_param(p, covariates, analysis=self.name),
        }

    def _columns(self, p: Mapping[str, Any]) -> list[str]:
        return [p["outcome"], *(parse_covariate(c).column for c in p["covariates"])]

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's complete cases: the records the model is fitted on."""
        p = self.validate(params)
        return complete_cohort(p["filter"], self._columns(p))

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        return (
            column_problems(p["outcome"], role="outcome", schema=schema, allowed=NUMERIC_TYPES)
            + covariate_problems(p["covariates"], schema)
            + schema_filter_problems(p["filter"], schema)
        )

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table, types = source.table, source.schema.columns
        specs = p["covariates"]
        conditions = complete_cases(table, self._columns(p), p["filter"])
        record_key = record_key_of(source)  # before connecting: see model_records
        with source.engine.connect() as conn:
            counts = local_levels(conn, table, specs, types, conditions)
            ordered = {
                s: order_levels(c, types[parse_covariate(s).column]) for s, c in counts.items()
            }
            basis = node_basis(specs, types, ordered, drop_reference=False)
            exprs = [basis_expr(table, b, types) for b in basis]
            exprs.append(numeric_expr(table, p["outcome"], types[p["outcome"]]))
            # the outcome and each numeric covariate, for the dominance rules
            numeric = {p["outcome"]: exprs[-1]}
            for b, e in zip(basis, exprs, strict=False):
                if b.label is None:
                    numeric[parse_covariate(b.spec).column] = e
            records = model_records(
                conn, record_key, numeric, conditions, extra=[sa.func.avg(e) for e in exprs]
            )
            n = records.n
            means = [float(m) if m is not None else 0.0 for m in records.extra]
            size = len(exprs)
            cross = np.zeros((size, size))
            if n > 0:
                centred = [e - sa.literal(m, sa.Double) for e, m in zip(exprs, means, strict=True)]
                pairs = [(i, j) for i in range(size) for j in range(i, size)]
                sums = conn.execute(
                    sa.select(*(sa.func.sum(centred[i] * centred[j]) for i, j in pairs)).where(
                        *conditions
                    )
                ).one()
                for (i, j), value in zip(pairs, sums, strict=True):
                    cross[i, j] = cross[j, i] = float(value or 0.0)
            leverage = max_leverage(
                conn, exprs[:-1], conditions, n=n, means=means[:-1], cross=cross[:-1, :-1]
            )
        return {
            "leverage": leverage,
            "n": n,
            "key": records.key,
            "magnitudes": records.magnitudes,
            "covariates": covariate_report(specs, types, counts),
            "basis": [b.key() for b in basis],
            "means": means,
            "cross": cross.tolist(),
            "level_counts": counts,
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Release the sufficient statistics only when every model rule passes.

        The rules see exact figures (n, level counts, dominance of the outcome and of each
        numeric covariate); a blocked output has no payload and no error text. Released:
        n through the release stage's count, the statistics as exact model values.
        """
        n = int(raw["n"])
        categorical = [c for c in raw["covariates"] if c[1] == CATEGORICAL]
        # This node's own model: the intercept, its basis, less one reference per covariate.
        parameters = 1 + len(raw["basis"]) - sum(1 for c in categorical if c[3])
        checked = check_model(
            records=n,
            parameters=parameters,
            levels=raw["level_counts"],
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
        covariates, basis = released_design(raw["covariates"], raw["basis"])
        payload = {
            "n": released_n,
            "n_model": release.model(n),
            "covariates": covariates,
            "basis": basis,
            "means": release.models(raw["means"]),
            "cross": release.models(raw["cross"]),
        }
        return NodeOutput(Outcome.RELEASED, payload, rules)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        base: dict[str, Any] = {"outcome": p["outcome"]}
        if part.blocked or not part.included:
            return {
                **base,
                **withheld_table("t"),
                "model": None,
                "withheld_by": part.blocked,
                "nodes": part.nodes,
            }
        design = unify_design(
            p["covariates"],
            {node: payload.get("covariates") for node, payload in part.included.items()},
            p["levels"],
        )
        size = len(design.full) + 1  # the design's columns, then the outcome
        parts = []
        released_n = 0
        for node, payload in part.included.items():
            released_n += as_count(payload.get("n"), node, "n") or 0
            # the exact number of records, a model statistic: it weights the pooling
            n = as_count(payload.get("n_model"), node, "the model's records")
            positions = [*expand(design, payload.get("basis"), node).tolist(), size - 1]
            means = np.zeros(size)
            cross = np.zeros((size, size))
            means[positions] = as_vector(payload.get("means"), len(positions), node, "means")
            cross[np.ix_(positions, positions)] = as_matrix(
                payload.get("cross"), len(positions), node, "cross"
            )
            parts.append(CrossProducts(n or 0, means, cross))
        pooled = pool_cross_products(parts)
        fit = ols_from_cross_products(
            pooled, list(design.kept), size - 1, design.terms, released_n=released_n
        )
        return {**base, **fit, "withheld_by": [], "nodes": part.nodes}

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return the coefficient table indexed by term (see fedtre.analyses.regression)."""
        return regression_frame(payload)


def ols_from_cross_products(
    pooled: CrossProducts,
    kept: list[int],
    outcome: int,
    terms: tuple[str, ...],
    *,
    released_n: int | None = None,
) -> dict[str, Any]:
    """Return the OLS coefficient table and figures from pooled centred cross-products.

    Slopes solve Sxx b = Sxy on the centred design; the intercept is mean(y) - b'mean(x).
    The coefficients, standard errors, t and F statistics come from the exact statistics
    (pooled.n is the exact number of records). released_n (the sum of the nodes' released
    n; the exact n when None) gives every figure that would state the number of records:
    n, df_resid, the t distribution's df of p values and intervals, R-squared (from F) and
    adjusted R-squared. scale, rss, log_likelihood and aic are None when released_n is
    given: with the exact standard errors they would give the exact n (module docstring).
    Raises InvalidRequest when there are too few records or the covariates are collinear.
    """
    n = pooled.n
    k = len(kept)
    parameters = k + 1
    df_resid = n - parameters
    shown_n = n if released_n is None else int(released_n)
    shown_df = shown_n - parameters
    if df_resid <= 0 or shown_df <= 0:
        raise InvalidRequest(
            f"the model has {parameters} parameters but too few records; use fewer covariates"
        )
    sxx = pooled.cross[np.ix_(kept, kept)]
    sxy = pooled.cross[kept, outcome]
    syy = float(pooled.cross[outcome, outcome])
    xbar = pooled.means[kept]
    ybar = float(pooled.means[outcome])
    sxx_inv = scaled_inverse(sxx, terms[1:])
    slopes = sxx_inv @ sxy
    rss = max(syy - float(sxy @ slopes), 0.0)
    scale = rss / df_resid
    coef = np.concatenate(([ybar - float(slopes @ xbar)], slopes))
    cov = np.empty((parameters, parameters))
    cov[1:, 1:] = scale * sxx_inv
    cov[1:, 0] = cov[0, 1:] = -scale * (sxx_inv @ xbar)
    cov[0, 0] = scale * (1.0 / n + float(xbar @ sxx_inv @ xbar))
    table = coefficient_table(terms, coef, cov, df=shown_df)
    f_stat = f_p = None
    if k > 0 and scale > 0:
        from scipy import stats

        f_stat = ((syy - rss) / k) / scale
        f_p = float(stats.f.sf(f_stat, k, shown_df))
    # R-squared from F and the shown df (equal to 1 - rss / syy at the exact n): an exact
    # R-squared beside the exact F (t squared, for one covariate) would give the exact df.
    r_squared: float | None
    if k == 0:
        r_squared = 0.0 if syy > 0 else None
    elif f_stat is not None:
        r_squared = k * f_stat / (k * f_stat + shown_df)
    else:
        r_squared = 1.0 if syy > 0 else None
    adj = 1.0 - (1.0 - r_squared) * (shown_n - 1) / shown_df if r_squared is not None else None
    exact = released_n is None
    llf = -n / 2.0 * (math.log(2.0 * math.pi) + math.log(rss / n) + 1.0) if rss > 0 else None
    model = {
        "kind": "ols",
        "n": shown_n,
        "df_model": float(k),
        "df_resid": float(shown_df),
        "scale": finite_or_none(scale) if exact else None,
        "rss": finite_or_none(rss) if exact else None,
        "r_squared": None if r_squared is None else finite_or_none(r_squared),
        "adj_r_squared": None if adj is None else finite_or_none(adj),
        "f_statistic": None if f_stat is None else finite_or_none(f_stat),
        "f_p_value": f_p,
        "log_likelihood": None if llf is None or not exact else finite_or_none(llf),
        "aic": None if llf is None or not exact else finite_or_none(-2.0 * llf + 2.0 * parameters),
    }
    return {**table, "model": model}


def scaled_inverse(matrix: np.ndarray, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Return the inverse of a symmetric positive definite matrix, solved on its correlation form.

    Scaling to unit diagonal first keeps covariates on very different scales (age in years,
    an indicator 0/1) from costing precision. Raises InvalidRequest naming a constant
    column, or saying the covariates are collinear.
    """
    if matrix.size == 0:
        return np.zeros((0, 0))
    diag = np.diag(matrix).copy()
    scale_max = max(float(diag.max()), 1e-300)
    constant = [names[i] for i, d in enumerate(diag) if d <= 1e-12 * scale_max or d <= 0]
    if constant:
        raise InvalidRequest(
            f"term(s) {constant} do not vary among the model's records; remove them"
        )
    d = np.sqrt(diag)
    corr = matrix / np.outer(d, d)
    eig = np.linalg.eigvalsh(corr)
    if eig.min() <= 1e-12 * eig.max():
        raise InvalidRequest(
            "the covariates are collinear (one is a combination of others among the model's "
            "records); remove one of them"
        )
    try:
        from scipy.linalg import cho_factor, cho_solve

        factor = cho_factor(corr)
        inv = cho_solve(factor, np.eye(len(d)))
    except np.linalg.LinAlgError as exc:
        raise InvalidRequest("the covariates are collinear; remove one of them") from exc
    inv = (inv + inv.T) / 2.0
    return inv / np.outer(d, d)
