"""The analysis catalogue: every analysis a job may name, and the types they exchange."""

from __future__ import annotations

from fedtre.analyses.base import (
    CATEGORICAL_TYPES,
    COLUMN_TYPES,
    NUMERIC_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
    RuleResult,
)
from fedtre.analyses.correlation import CorrelationAnalysis
from fedtre.analyses.count import CountAnalysis
from fedtre.analyses.cox import CoxAnalysis
from fedtre.analyses.crosstab import CrosstabAnalysis
from fedtre.analyses.glm import GlmAnalysis
from fedtre.analyses.histogram import HistogramAnalysis
from fedtre.analyses.kaplan_meier import KaplanMeierAnalysis
from fedtre.analyses.linear_regression import LinearRegressionAnalysis
from fedtre.analyses.quantiles import QuantilesAnalysis
from fedtre.analyses.summary import SummaryAnalysis
from fedtre.errors import NotFound

CATALOGUE: dict[str, Analysis] = {
    a.name: a
    for a in (
        CountAnalysis(),
        CrosstabAnalysis(),
        SummaryAnalysis(),
        HistogramAnalysis(),
        QuantilesAnalysis(),
        CorrelationAnalysis(),
        LinearRegressionAnalysis(),
        GlmAnalysis(),
        KaplanMeierAnalysis(),
        CoxAnalysis(),
    )
}


def get_analysis(name: str) -> Analysis:
    """Return the catalogue's analysis called `name`; raises NotFound listing the catalogue."""
    analysis = CATALOGUE.get(name) if isinstance(name, str) else None
    if analysis is None:
        raise NotFound(f"unknown analysis {name!r}; the catalogue has: {', '.join(CATALOGUE)}")
    return analysis


__all__ = [
    "CATALOGUE",
    "CATEGORICAL_TYPES",
    "COLUMN_TYPES",
    "NUMERIC_TYPES",
    "Analysis",
    "CorrelationAnalysis",
    "CountAnalysis",
    "CoxAnalysis",
    "CrosstabAnalysis",
    "DataSource",
    "DatasetSchema",
    "GlmAnalysis",
    "HistogramAnalysis",
    "KaplanMeierAnalysis",
    "LinearRegressionAnalysis",
    "NodeOutput",
    "Outcome",
    "QuantilesAnalysis",
    "RuleResult",
    "SummaryAnalysis",
    "get_analysis",
]
