"""The linear_regression analysis: ordinary least squares in one round, equal to the pooled fit.

Parameters: `outcome` (numeric column), `covariates` (list; see fedtre.analyses.design for
numeric and categorical covariates and term names), optional `filter`, optional `levels`.

Each node computes, in its own SQL engine, the sufficient statistics of its complete
cases over every design column (numeric covariates and one indicator per level it has,
reference included) and the outcome: the count n, the column means, and the centred
cross-products C = sum (x - mean)(x - mean)' (two passes: means, then centred sums; the
numerically stable form of X'X, X'y and y'y). No row reaches Python.

- node payload: {"n": int, "covariates": [[spec, kind, type, [levels]], ...],
                 "basis": [[spec, level | null], ...], "means": [...], "cross": [[...]]}
  (means and cross run over the basis columns, then the outcome). Released only when
  fedtre.disclosure.models.check_model passes (residual degrees of freedom, parameters at
  most a third of the records, every level of a categorical covariate in at least
  `threshold` records); otherwise BLOCKED, nothing leaves.
- combined: fedtre.analyses.regression's coefficient table with t statistics and model
  figures (n, df_model, df_resid, r_squared, adj_r_squared, f_statistic, f_p_value,
  scale = residual variance, rss, log_likelihood, aic), plus "nodes" and "withheld_by".

The coordinator takes the union of the levels, maps each node's columns into it (a level
absent at a node is an all-zero column there), pools the cross-products exactly (Chan's
formula in matrix form), drops each covariate's reference level and solves the normal
equations on the correlation-scaled matrix. A BLOCKED node withheld its part of the model,
so then no coefficient is combined (never a fit on the other nodes presented as pooled);
REFUSED and FAILED nodes are left out and listed under nodes.excluded.
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
from fedtre.disclosure.models import check_model
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"outcome": "sbp", "covariates": ["age", "sex", "C(deprivation)"]}'


class LinearRegressionAnalysis(Analysis):
    """Ordinary least squares of a numeric outcome on covariates."""

    name = "linear_regression"
    description = "OLS regression: coefficients, standard errors, t, p values, 95% CIs, R-squared."

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
        with source.engine.connect() as conn:
            counts = local_levels(conn, table, specs, types, conditions)
            ordered = {
                s: order_levels(c, types[parse_covariate(s).column]) for s, c in counts.items()
            }
            basis = node_basis(specs, types, ordered, drop_reference=False)
            exprs = [basis_expr(table, b, types) for b in basis]
            exprs.append(numeric_expr(table, p["outcome"], types[p["outcome"]]))
            first = conn.execute(
                sa.select(sa.func.count(), *(sa.func.avg(e) for e in exprs)).where(*conditions)
            ).one()
            n = int(first[0])
            means = [float(m) if m is not None else 0.0 for m in first[1:]]
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
        return {
            "n": n,
            "covariates": covariate_report(specs, types, counts),
            "basis": [b.key() for b in basis],
            "means": means,
            "cross": cross.tolist(),
            "level_counts": counts,
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Release the sufficient statistics only when every model rule passes."""
        n = int(raw["n"])
        categorical = [c for c in raw["covariates"] if c[1] == CATEGORICAL]
        # This node's own model: the intercept, its basis, less one reference per covariate.
        parameters = 1 + len(raw["basis"]) - sum(1 for c in categorical if c[3])
        checked = check_model(
            records=n, parameters=parameters, levels=raw["level_counts"], policy=policy
        )
        if not checked.passed:
            return NodeOutput(Outcome.BLOCKED, {}, checked.rules)
        payload = {k: raw[k] for k in ("n", "covariates", "basis", "means", "cross")}
        return NodeOutput(Outcome.RELEASED, payload, checked.rules)

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
        for node, payload in part.included.items():
            n = as_count(payload.get("n"), node, "n")
            positions = [*expand(design, payload.get("basis"), node).tolist(), size - 1]
            means = np.zeros(size)
            cross = np.zeros((size, size))
            means[positions] = as_vector(payload.get("means"), len(positions), node, "means")
            cross[np.ix_(positions, positions)] = as_matrix(
                payload.get("cross"), len(positions), node, "cross"
            )
            parts.append(CrossProducts(n or 0, means, cross))
        pooled = pool_cross_products(parts)
        fit = ols_from_cross_products(pooled, list(design.kept), size - 1, design.terms)
        return {**base, **fit, "withheld_by": [], "nodes": part.nodes}

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return the coefficient table indexed by term (see fedtre.analyses.regression)."""
        return regression_frame(payload)


def ols_from_cross_products(
    pooled: CrossProducts, kept: list[int], outcome: int, terms: tuple[str, ...]
) -> dict[str, Any]:
    """Return the OLS coefficient table and figures from pooled centred cross-products.

    Slopes solve Sxx b = Sxy on the centred design; the intercept is mean(y) - b'mean(x).
    Raises InvalidRequest when there are too few records or the covariates are collinear.
    """
    n = pooled.n
    k = len(kept)
    parameters = k + 1
    df_resid = n - parameters
    if df_resid <= 0:
        raise InvalidRequest(
            f"the model has {parameters} parameters but only {n} records; use fewer covariates"
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
    table = coefficient_table(terms, coef, cov, df=df_resid)
    r_squared = 1.0 - rss / syy if syy > 0 else None
    adj = 1.0 - (1.0 - r_squared) * (n - 1) / df_resid if r_squared is not None else None
    f_stat = f_p = None
    if k > 0 and scale > 0:
        from scipy import stats

        f_stat = ((syy - rss) / k) / scale
        f_p = float(stats.f.sf(f_stat, k, df_resid))
    llf = -n / 2.0 * (math.log(2.0 * math.pi) + math.log(rss / n) + 1.0) if rss > 0 else None
    model = {
        "kind": "ols",
        "n": n,
        "df_model": float(k),
        "df_resid": float(df_resid),
        "scale": finite_or_none(scale),
        "rss": finite_or_none(rss),
        "r_squared": None if r_squared is None else finite_or_none(r_squared),
        "adj_r_squared": None if adj is None else finite_or_none(adj),
        "f_statistic": None if f_stat is None else finite_or_none(f_stat),
        "f_p_value": f_p,
        "log_likelihood": None if llf is None else finite_or_none(llf),
        "aic": None if llf is None else finite_or_none(-2.0 * llf + 2.0 * parameters),
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
