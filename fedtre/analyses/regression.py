"""Regression results shared by linear_regression and glm: the coefficient table and model figures.

Combined payload of a fitted model (lists run over `terms`, "Intercept" first):

    {"outcome": col, "terms": [...], "coef": [...], "std_err": [...],
     "t" (OLS) or "z" (GLM): [...], "p_value": [...], "ci_lower": [...], "ci_upper": [...],
     "model": {figures, see ModelFit}, "nodes": {...}}

Confidence intervals are 95%: t quantiles on the residual degrees of freedom for OLS,
normal quantiles for GLMs, as statsmodels computes them.

Terms are listed in statsmodels' (patsy's) order, whatever order the covariates were
written in: the intercept, then the categorical terms, then each numeric column's terms
(statsmodels_order), so a table lines up row for row with `smf.ols`/`smf.glm` on the
same formula.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from fedtre.analyses.design import INTERCEPT, finite_or_none

if TYPE_CHECKING:
    import pandas as pd

ALPHA = 0.05
COLUMNS = ("coef", "std_err", "p_value", "ci_lower", "ci_upper")


def coefficient_table(
    terms: Sequence[str], coef: np.ndarray, cov: np.ndarray, *, df: float | None
) -> dict[str, Any]:
    """Return the coefficient table: estimates, standard errors, t or z, p values, 95% CIs.

    df is the residual degrees of freedom for t statistics; None gives z statistics.
    """
    from scipy import stats

    order = statsmodels_order(terms)
    terms = [terms[i] for i in order]
    coef = np.asarray(coef)[order]
    cov = np.asarray(cov)[np.ix_(order, order)]
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = coef / se
    if df is None:
        p = 2.0 * stats.norm.sf(np.abs(statistic))
        q = float(stats.norm.ppf(1.0 - ALPHA / 2.0))
        name = "z"
    else:
        p = 2.0 * stats.t.sf(np.abs(statistic), df)
        q = float(stats.t.ppf(1.0 - ALPHA / 2.0, df))
        name = "t"

    def listed(values: np.ndarray) -> list[float | None]:
        return [finite_or_none(float(v)) for v in values]

    return {
        "terms": list(terms),
        "coef": listed(coef),
        "std_err": listed(se),
        name: listed(statistic),
        "p_value": listed(p),
        "ci_lower": listed(coef - q * se),
        "ci_upper": listed(coef + q * se),
    }


def statsmodels_order(terms: Sequence[str]) -> list[int]:
    """Return the positions of terms in the order patsy gives a formula's columns.

    Patsy groups terms by the numeric factors they contain: first the group with none
    (the intercept, then categorical terms such as `sex[T.M]`), then one group per set
    of numeric factors in order of first appearance; lower-order terms first within a
    group. A factor is categorical when its name carries a level, `name[T.level]`.
    """

    def numeric_factors(term: str) -> frozenset[str]:
        return frozenset(f for f in term.split(":") if "[T." not in f and f != INTERCEPT)

    groups: list[frozenset[str]] = [frozenset()]
    for term in terms:
        if numeric_factors(term) not in groups:
            groups.append(numeric_factors(term))
    return sorted(
        range(len(terms)),
        key=lambda i: (
            groups.index(numeric_factors(terms[i])),
            terms[i] != INTERCEPT,
            terms[i].count(":"),
            i,
        ),
    )


def withheld_table(statistic: str) -> dict[str, Any]:
    """Return an empty coefficient table: the model was not combined."""
    return {
        "terms": [],
        "coef": [],
        "std_err": [],
        statistic: [],
        "p_value": [],
        "ci_lower": [],
        "ci_upper": [],
    }


def regression_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    """Return the coefficient table as a DataFrame indexed by term.

    Columns: coef, std_err, t (OLS) or z (GLM), p_value, ci_lower, ci_upper. The model's
    figures are in frame.attrs["model"] (also Result.model).
    """
    import pandas as pd

    statistic = "z" if "z" in payload else "t"
    terms = list(payload.get("terms") or [])
    data = {}
    for column in ("coef", "std_err", statistic, "p_value", "ci_lower", "ci_upper"):
        values = payload.get(column) or []
        data[column] = [np.nan if v is None else float(v) for v in values]
        if len(data[column]) != len(terms):
            data[column] = [np.nan] * len(terms)
    frame = pd.DataFrame(data, index=pd.Index(terms, dtype=object, name="term"))
    model = payload.get("model")
    if isinstance(model, Mapping):
        frame.attrs["model"] = dict(model)
    return frame


@dataclass(frozen=True)
class ModelFit:
    """A fitted model's figures: `Result.model` for linear_regression and glm results.

    n: records used (complete cases), the sum of the nodes' released (perturbed or
    rounded) counts, never the exact number; df_model: parameters less the intercept;
    df_resid: that n less the parameters; scale: 1.0 (GLM). OLS: r_squared and
    adj_r_squared (from F and df_resid), f_statistic (exact), f_p_value; scale (residual
    variance), rss, log_likelihood and aic are None, as together with the exact standard
    errors they would state the exact n (fedtre.analyses.linear_regression). GLM: family,
    link, deviance, log_likelihood, aic (exact), iterations (Newton-Raphson / IRLS
    rounds), converged. Figures an analysis does not produce are None.
    """

    kind: str
    n: int
    df_model: float
    df_resid: float
    scale: float | None = None
    log_likelihood: float | None = None
    aic: float | None = None
    r_squared: float | None = None
    adj_r_squared: float | None = None
    f_statistic: float | None = None
    f_p_value: float | None = None
    rss: float | None = None
    family: str | None = None
    link: str | None = None
    deviance: float | None = None
    iterations: int | None = None
    converged: bool | None = None

    @classmethod
    def from_payload(cls, model: Mapping[str, Any]) -> ModelFit:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in model.items() if k in known}
        values["n"] = int(values.get("n") or 0)
        if values.get("iterations") is not None:
            values["iterations"] = int(values["iterations"])
        return cls(**values)

    def lines(self) -> list[str]:
        """The figures as readable lines, for `fedtre result`."""
        if self.kind == "glm":
            head = f"GLM {self.family} ({self.link} link)"
        else:
            head = "OLS linear regression"
        lines = [
            f"{head}: n = {self.n}, df model = {_g(self.df_model)}, df residual = {_g(self.df_resid)}"
        ]
        if self.kind == "glm":
            state = "converged" if self.converged else "did NOT converge"
            lines.append(
                f"deviance = {_g(self.deviance)}, {state} after {self.iterations} iterations"
            )
        else:
            lines.append(
                f"R-squared = {_g(self.r_squared)}, adjusted = {_g(self.adj_r_squared)}, "
                f"F = {_g(self.f_statistic)} (p = {_g(self.f_p_value)}), residual variance = {_g(self.scale)}"
            )
        lines.append(f"log-likelihood = {_g(self.log_likelihood)}, AIC = {_g(self.aic)}")
        return lines


def _g(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return str(value)
