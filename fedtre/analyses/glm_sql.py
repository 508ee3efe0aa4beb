"""One IRLS round of the glm analysis as one aggregate statement in the data engine.

A round needs, over a node's complete cases at the current beta, only X'WX, X'Wz (z the
working response), the deviance and the number of records (and of events): the engine
computes each record's linear predictor, mean and weight and sums the products, so no
record leaves it. exp and ln are in DuckDB, PostgreSQL and SQLite's math functions
(compiled into Python's SQLite since 3.35).

The figures equal the in-memory computation's (numpy over the same records) up to the
order of floating-point sums. Two engine limits are kept out of the way: PostgreSQL
raises on exp's overflow and underflow, so exp's argument is clamped to [-700, 709]:
below -700 the term is below 1e-304 (it changes no sum), and a Poisson linear predictor
above 709 is the overflow numpy would give (the round is reported not finite, and the
coordinator halves its step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.ctes import materialized

EXP_MAX = 709.0
EXP_MIN = -700.0


@dataclass(frozen=True)
class RoundSums:
    """One node's sums of one round: X'WX, X'Wz, the deviance and its constant, n."""

    xtwx: np.ndarray
    xtwz: np.ndarray
    deviance: float
    ll_const: float
    n: int
    events: int

    def finite(self) -> bool:
        return bool(
            np.all(np.isfinite(self.xtwx))
            and np.all(np.isfinite(self.xtwz))
            and math.isfinite(self.deviance)
        )


def _double(value: float) -> sa.ColumnElement[float]:
    return sa.literal(float(value), sa.Double)


def _clamped_exp(t: sa.ColumnElement[Any], upper: float = EXP_MAX) -> sa.ColumnElement[Any]:
    bounded = sa.case((t > upper, _double(upper)), (t < EXP_MIN, _double(EXP_MIN)), else_=t)
    return sa.func.exp(bounded)


def _softplus(t: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """log(1 + exp(t)) without overflow: max(t, 0) + log(1 + exp(-|t|))."""
    positive = sa.case((t > 0, t), else_=_double(0.0))
    return positive + sa.func.ln(_double(1.0) + _clamped_exp(-sa.func.abs(t)))


def round_sums(
    conn: sa.Connection,
    *,
    family: str,
    outcome: sa.ColumnElement[Any],
    offset: sa.ColumnElement[Any],
    columns: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    beta: np.ndarray | None,
    start_mean: float = 0.0,
) -> RoundSums:
    """Return one round's sums over the records meeting `conditions`, in one statement.

    family: "binomial" (logit link) or "poisson" (log link); columns: the design columns
    after the intercept; beta: the round's coefficients (intercept first), or None for
    the first round, which starts from the data (mu = (y + 0.5) / 2, or (y + start_mean)
    / 2 for Poisson, as statsmodels starts).
    """
    size = len(columns) + 1
    if family == "poisson" and beta is None and start_mean <= 0:
        # every outcome is 0 here: the start mu is 0 and its log -inf, as numpy finds it
        n = int(conn.execute(sa.select(sa.func.count()).where(*conditions)).scalar_one())
        return RoundSums(np.zeros((size, size)), np.full(size, np.nan), math.nan, 0.0, n, 0)
    design = (
        sa.select(
            outcome.label("y"),
            offset.label("off"),
            *(c.label(f"x{i}") for i, c in enumerate(columns, start=1)),
        )
        .where(*conditions)
        .subquery("design")
    )
    y, off = design.c.y, design.c.off
    xs = [design.c[f"x{i}"] for i in range(1, size)]
    eta: sa.ColumnElement[Any]
    if beta is None:
        shift = 0.5 if family == "binomial" else start_mean
        start = (y + _double(shift)) / _double(2.0)
        if family == "binomial":
            eta = sa.func.ln(start / (_double(1.0) - start))
        else:
            eta = sa.func.ln(start)
    else:
        eta = _double(beta[0]) + off
        for b, x in zip(beta[1:], xs, strict=True):
            eta = eta + _double(b) * x
    linear = sa.select(design, eta.label("eta")).subquery("linear")
    eta_c = linear.c.eta
    mu: sa.ColumnElement[Any]
    if family == "binomial":
        # the logistic function, each branch's exp at most 1
        mu = sa.case(
            (eta_c >= 0, _double(1.0) / (_double(1.0) + _clamped_exp(-eta_c))),
            else_=_clamped_exp(eta_c) / (_double(1.0) + _clamped_exp(eta_c)),
        )
    else:
        mu = _clamped_exp(eta_c)
    means = sa.select(linear, mu.label("mu")).subquery("means")
    y, off, eta_c, mu_c = means.c.y, means.c.off, means.c.eta, means.c.mu
    xs = [means.c[f"x{i}"] for i in range(1, size)]
    if family == "binomial":
        weight = mu_c * (_double(1.0) - mu_c)
        record_deviance = _double(2.0) * (
            y * _softplus(-eta_c) + (_double(1.0) - y) * _softplus(eta_c)
        )
    else:
        weight = mu_c
        y_log_y = sa.case((y > 0, y * sa.func.ln(y)), else_=_double(0.0))
        record_deviance = _double(2.0) * (y_log_y - y * eta_c - y + mu_c)
    working = weight * (eta_c - off) + (y - mu_c)
    terms = materialized(
        sa.select(means, weight.label("w"), working.label("wz"), record_deviance.label("dev")).cte(
            "terms"
        )
    )  # each record's mu and weight once, not once per sum
    w, wz = terms.c.w, terms.c.wz
    x_all: list[Any] = [None, *(terms.c[f"x{i}"] for i in range(1, size))]
    pairs = [(i, j) for i in range(size) for j in range(i, size)]

    def product(i: int, j: int) -> sa.ColumnElement[Any]:
        factors = [x for x in (x_all[i], x_all[j]) if x is not None]
        value: sa.ColumnElement[Any] = w
        for x in factors:
            value = value * x
        return sa.func.sum(value)

    query = sa.select(
        sa.func.count(),
        sa.func.sum(terms.c.y),
        sa.func.sum(terms.c.dev),
        sa.func.max(terms.c.eta),
        *(product(i, j) for i, j in pairs),
        sa.func.sum(wz),
        *(sa.func.sum(wz * x) for x in x_all[1:]),
    )
    row = conn.execute(query).one()
    n = int(row[0])
    if n == 0:
        return RoundSums(np.zeros((size, size)), np.zeros(size), 0.0, 0.0, 0, 0)
    values = [math.nan if v is None else float(v) for v in row[4:]]
    xtwx = np.zeros((size, size))
    for (i, j), value in zip(pairs, values, strict=False):
        xtwx[i, j] = xtwx[j, i] = value
    xtwz = np.array(values[len(pairs) :])
    deviance = float(row[2])
    if family == "poisson" and row[3] is not None and float(row[3]) > EXP_MAX:
        deviance = math.inf  # exp overflowed at this beta (see the module's docstring)
    ll_const = _poisson_ll_const(conn, outcome, conditions) if family == "poisson" else 0.0
    return RoundSums(xtwx, xtwz, deviance, ll_const, n, int(round(float(row[1]))))


def _poisson_ll_const(
    conn: sa.Connection,
    outcome: sa.ColumnElement[Any],
    conditions: Sequence[sa.ColumnElement[bool]],
) -> float:
    """The part of the Poisson log-likelihood free of beta, from the outcome's value counts
    (lgamma is not in every engine's SQL; counts take few distinct values)."""
    from scipy.special import gammaln, xlogy  # not at import: the CLI starts without scipy

    y = outcome.label("y")
    found = conn.execute(sa.select(y, sa.func.count()).where(*conditions).group_by(y)).all()
    if not found:
        return 0.0
    values = np.array([float(v) for v, _ in found])
    counts = np.array([int(c) for _, c in found], dtype=float)
    return float(np.sum(counts * (xlogy(values, values) - values - gammaln(values + 1.0))))
