"""A statsmodels-style summary of a federated model (Result.summary()), text and HTML.

The layout follows statsmodels' `fit.summary()`: a block of model figures, the
coefficient table (terms in statsmodels' order, fedtre.analyses.regression), then for a
binomial GLM the odds ratios with 95% CIs and the baseline probability (what DataSHIELD's
ds.glm reports), for a Poisson GLM the rate ratios. Every figure comes from the combined
result the researcher received; nothing is recomputed from data.

"No. Observations" is the model's n: the sum of the nodes' released (perturbed or
rounded) counts of complete cases, never the exact number. The number of records left
out for missing values is a count the nodes do not release, so it is shown as not
available rather than guessed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedtre.analyses.design import INTERCEPT
from fedtre.analyses.regression import ModelFit
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

WIDTH = 78
NOT_AVAILABLE = "not released"
_TITLES = {"glm": "Generalized Linear Model Regression Results", "ols": "OLS Regression Results"}


@dataclass(frozen=True, eq=False)  # holds DataFrames, which do not compare to a bool
class ModelSummary:
    """A fitted model's figures and tables; print() it, or show it in a notebook."""

    title: str
    figures: tuple[tuple[str, str], ...]
    coefficients: pd.DataFrame
    statistic: str
    ratios: pd.DataFrame | None
    ratio_name: str
    notes: tuple[str, ...]

    def as_text(self) -> str:
        lines = [self.title.center(WIDTH), "=" * WIDTH]
        half = (len(self.figures) + 1) // 2
        left, right = self.figures[:half], self.figures[half:]
        for i, (name, value) in enumerate(left):
            line = f"{name + ':':<24}{value:>14}"
            if i < len(right):
                line += f"   {right[i][0] + ':':<22}{right[i][1]:>15}"
            lines.append(line.rstrip())
        lines.append("=" * WIDTH)
        lines += _text_table(self.coefficients, _coef_headers(self.statistic), _COEF_FORMATS)
        if self.ratios is not None:
            lines.append("=" * WIDTH)
            lines.append(f"{self.ratio_name} (exp(coef)) with 95% confidence intervals")
            lines.append("-" * WIDTH)
            lines += _text_table(
                self.ratios, [self.ratio_name.lower().rstrip("s"), "[0.025", "0.975]"], _RATIO
            )
        lines.append("=" * WIDTH)
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)

    def as_html(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(n)}:</th><td>{html.escape(v)}</td></tr>" for n, v in self.figures
        )
        coef = _html_table(self.coefficients, _coef_headers(self.statistic), _COEF_FORMATS)
        parts = [
            f"<div><b>{html.escape(self.title)}</b>",
            f"<table>{rows}</table>",
            coef,
        ]
        if self.ratios is not None:
            parts.append(f"<p>{html.escape(self.ratio_name)} (exp(coef)) with 95% CIs</p>")
            parts.append(
                _html_table(
                    self.ratios, [self.ratio_name.lower().rstrip("s"), "[0.025", "0.975]"], _RATIO
                )
            )
        parts += [f"<p><small>{html.escape(note)}</small></p>" for note in self.notes]
        return "".join(parts) + "</div>"

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def _repr_html_(self) -> str:
        return self.as_html()


def model_summary(
    frame: pd.DataFrame, fit: ModelFit, outcome: str, warning: str | None = None
) -> ModelSummary:
    """Build the summary of a combined model from its coefficient frame and figures."""
    statistic = "z" if "z" in frame.columns else "t"
    kind = "glm" if fit.kind == "glm" else "ols"
    figures: list[tuple[str, str]] = [
        ("Dep. Variable", outcome),
        ("Model", "GLM" if kind == "glm" else "OLS"),
    ]
    if kind == "glm":
        figures += [
            ("Model Family", (fit.family or "").capitalize()),
            ("Link Function", (fit.link or "").capitalize()),
            ("Method", "IRLS"),
        ]
    else:
        figures += [("Method", "Least Squares")]
    figures += [
        ("No. Observations", _number(fit.n)),
        ("No. excluded (missing)", NOT_AVAILABLE),
        ("Df Residuals", _number(fit.df_resid)),
        ("Df Model", _number(fit.df_model)),
    ]
    if kind == "glm":
        figures += [
            ("Scale", _fixed(fit.scale, 4)),
            ("Log-Likelihood", _fixed(fit.log_likelihood, 2)),
            ("Deviance", _fixed(fit.deviance, 2)),
            ("AIC", _fixed(fit.aic, 2)),
            ("Converged", str(bool(fit.converged))),
            ("No. Iterations", _number(fit.iterations)),
        ]
    else:
        figures += [
            ("R-squared", _fixed(fit.r_squared, 3)),
            ("Adj. R-squared", _fixed(fit.adj_r_squared, 3)),
            ("F-statistic", _fixed(fit.f_statistic, 2)),
            ("Prob (F-statistic)", _general(fit.f_p_value)),
        ]
    ratios, ratio_name = None, ""
    notes = [
        "No. Observations is the sum of the nodes' released counts of complete cases "
        "(perturbed or rounded by their disclosure rules), not the exact number; records "
        "with a missing value are left out, and how many is not released."
    ]
    if kind == "glm" and fit.family == "binomial":
        ratios, ratio_name = exp_table(frame, "odds_ratio"), "Odds ratios"
        intercept = baseline_probability(frame)
        if intercept is not None:
            notes.append(
                "Baseline probability (the intercept: every covariate at its reference "
                "level or 0) = {:.4f} [{:.4f}, {:.4f}].".format(*intercept)
            )
    elif kind == "glm" and fit.family == "poisson":
        ratios, ratio_name = exp_table(frame, "rate_ratio"), "Rate ratios"
    if warning:
        notes.append(warning)
    return ModelSummary(
        title=_TITLES[kind],
        figures=tuple(figures),
        coefficients=frame,
        statistic=statistic,
        ratios=ratios,
        ratio_name=ratio_name,
        notes=tuple(notes),
    )


def exp_table(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """exp(coef) and exp of its 95% CI, for every term but the intercept."""
    import numpy as np
    import pandas as pd

    terms = frame.drop(index=INTERCEPT, errors="ignore")
    return pd.DataFrame(
        {
            name: np.exp(terms["coef"]),
            "ci_lower": np.exp(terms["ci_lower"]),
            "ci_upper": np.exp(terms["ci_upper"]),
        },
        index=terms.index,
    )


def baseline_probability(frame: pd.DataFrame) -> tuple[float, float, float] | None:
    """expit of the intercept and of its CI bounds, or None without an intercept."""
    if INTERCEPT not in frame.index:
        return None
    row = frame.loc[INTERCEPT]
    values = (row["coef"], row["ci_lower"], row["ci_upper"])
    if not all(isinstance(v, float) and math.isfinite(v) for v in values):
        return None
    return tuple(1.0 / (1.0 + math.exp(-v)) for v in values)  # type: ignore[return-value]


def require_model(analysis: str, combined: Mapping[str, Any]) -> None:
    """Raise InvalidRequest unless the combined result is a fitted model."""
    if not isinstance(combined.get("model"), Mapping) or "terms" not in combined:
        raise InvalidRequest(
            f"summary() is for fitted models (linear_regression, glm), and this {analysis} "
            "result has none; use to_frame() for its table"
        )


# -- formatting -----------------------------------------------------------------------------

_COEF_FORMATS = ("{:.4f}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.3f}")
_RATIO = ("{:.4f}", "{:.4f}", "{:.4f}")


def _coef_headers(statistic: str) -> list[str]:
    return ["coef", "std err", statistic, f"P>|{statistic}|", "[0.025", "0.975]"]


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _text_table(frame: pd.DataFrame, headers: Sequence[str], formats: Sequence[str]) -> list[str]:
    label = max([len(str(t)) for t in frame.index] + [10])
    lines = [" " * label + "".join(f"{h:>11}" for h in headers), "-" * WIDTH]
    for term, row in frame.iterrows():
        cells = [_cell(v, f) for v, f in zip(row.tolist(), formats, strict=True)]
        lines.append(f"{str(term):<{label}}" + "".join(f"{c:>11}" for c in cells))
    return lines


def _html_table(frame: pd.DataFrame, headers: Sequence[str], formats: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["", *headers])
    body = "".join(
        "<tr><th>"
        + html.escape(str(term))
        + "</th>"
        + "".join(f"<td>{_cell(v, f)}</td>" for v, f in zip(row.tolist(), formats, strict=True))
        + "</tr>"
        for term, row in frame.iterrows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _fixed(value: float | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def _general(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
