"""The correlation analysis: the Pearson correlation matrix of numeric columns, equal to the pooled one.

Parameters: `columns` (a list of 2 to 50 numeric columns), optional `filter`. Records are
complete cases (no NULL in any of the columns), as numpy.corrcoef on the pooled complete
rows.

Each node computes in its own SQL engine its n with its cell key, the columns' means and
their centred cross-products (two passes: means, then centred sums), and, for the
dominance rules, each column's total, largest values and minimum (never released). The
coordinator pools the cross-products exactly (Chan's formula in matrix form) and divides.

- node payload: {"columns": [...], "n": int, "n_model": float, "means": [...],
                 "cross": [[...]]}
  Every value passes the release stage (released_fields). n is a count
  (release.count, the cell key of exactly the complete records), the figure a researcher
  sees. n_model (the exact n), means and cross-products are model statistics
  (release.models, Kind.MODEL): exact, for the coordinator's pooling only; a researcher
  receives the combined matrix and, per node, only columns and n
  (release.researcher_view), never a node's model statistics (an exact mean beside a
  perturbed n would give the exact n back, as the summary's exact mean once did). Chan's formula needs each node's exact n, hence n_model: it says
  nothing the exact means and cross-products would not. They still say what a summary
  of each column would (n, mean, variance), so the summary's rules apply to each column
  before anything leaves: n at least the threshold, n - 1 at least the threshold
  (sd_threshold), and no dominated column total (NK, p%; negative values hold the
  output for the TRE's output checker). A failing rule blocks the output: a correlation
  matrix is released whole or not at all.
- combined: {"columns": [...], "n": int | null, "matrix": [[...]] | null,
             "withheld_by": [node, ...], "nodes": {...}}
  matrix: exact (pooled from the model statistics); n: the sum of the nodes' released
  (perturbed or rounded) counts. null when a node blocked its output (a combined matrix
  is never over fewer nodes than answered it); REFUSED and FAILED nodes are left out and
  listed under nodes.excluded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import (
    NUMERIC_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
    RuleResult,
)
from fedtre.analyses.contributors import contribution, top_values_of_columns
from fedtre.analyses.design import (
    CrossProducts,
    as_matrix,
    as_vector,
    complete_cases,
    finite_or_none,
    pool_cross_products,
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
from fedtre.disclosure import cellkey, dominance, release, rules
from fedtre.disclosure.policy import MAX_DOMINANCE_N
from fedtre.disclosure.release import Kind
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"columns": ["age", "bmi", "sbp"]}'
MAX_COLUMNS = 50


class CorrelationAnalysis(Analysis):
    """Pearson correlation matrix of two or more numeric columns."""

    name = "correlation"
    list_params = frozenset({"columns"})
    description = "Pearson correlation matrix of numeric columns (complete cases)."
    released_fields: ClassVar[Mapping[str, str]] = {
        "columns.*": Kind.PARAMETER,
        "n": Kind.COUNT,
        "n_model": Kind.MODEL,
        "means.*": Kind.MODEL,
        "cross.*.*": Kind.MODEL,
    }

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("columns",),
            optional=("filter",),
            example=_EXAMPLE,
        )
        columns = p["columns"]
        if (
            not isinstance(columns, list)
            or not 2 <= len(columns) <= MAX_COLUMNS
            or not all(isinstance(c, str) and c for c in columns)
        ):
            raise InvalidRequest(
                f"correlation parameter 'columns' must list 2 to {MAX_COLUMNS} numeric column "
                f"names, e.g. {_EXAMPLE}"
            )
        if len(set(columns)) != len(columns):
            raise InvalidRequest("correlation 'columns' lists a column twice")
        return {"columns": list(columns), "filter": filter_param(p)}

    def cohort_filter(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The filter's complete cases: the records the matrix describes."""
        p = self.validate(params)
        return complete_cohort(p["filter"], p["columns"])

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        problems: list[str] = []
        for column in p["columns"]:
            problems += column_problems(
                column, role="correlation", schema=schema, allowed=NUMERIC_TYPES
            )
        return problems + schema_filter_problems(p["filter"], schema)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        """Return n, its cell key, means, centred cross-products and each column's
        contributions for the dominance rules (agent only)."""
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table = source.table
        conditions = complete_cases(table, p["columns"], p["filter"])
        values = [sa.cast(table.c[c], sa.Double) for c in p["columns"]]
        size = len(values)
        cross = np.zeros((size, size))
        # Before connecting: a test source gets its record-key function on checkout.
        first_query = sa.select(
            sa.func.count(),
            cellkey.cell_key_sum(cellkey.record_key_of(source)),
            *(sa.func.avg(v) for v in values),
            *(sa.func.sum(v) for v in values),
            *(sa.func.min(v) for v in values),
        ).where(*conditions)
        with source.engine.connect() as conn:
            first = conn.execute(first_query).one()
            n, key = int(first[0]), int(first[1] or 0)
            means = [float(m) if m is not None else 0.0 for m in first[2 : 2 + size]]
            totals = first[2 + size : 2 + 2 * size]
            minima = first[2 + 2 * size :]
            if n > 0:
                centred = [v - sa.literal(m, sa.Double) for v, m in zip(values, means, strict=True)]
                pairs = [(i, j) for i in range(size) for j in range(i, size)]
                sums = conn.execute(
                    sa.select(*(sa.func.sum(centred[i] * centred[j]) for i, j in pairs)).where(
                        *conditions
                    )
                ).one()
                for (i, j), value in zip(pairs, sums, strict=True):
                    cross[i, j] = cross[j, i] = float(value or 0.0)
            named = dict(zip(p["columns"], values, strict=True))
            tops = top_values_of_columns(conn, named, conditions, limit=MAX_DOMINANCE_N)
        contributions = {
            c: contribution(totals[i], minima[i], tops[c]) for i, c in enumerate(p["columns"])
        }
        return {
            "columns": p["columns"],
            "n": n,
            "key": key,
            "means": means,
            "cross": cross.tolist(),
            "contributions": contributions,
        }

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Block the matrix unless every column passes the summary's rules; release n as a
        count and the rest as model statistics."""
        n = int(raw["n"])
        t = policy.threshold
        released_n = release.count(n, int(raw["key"]), policy) if n > 0 else None
        checked: list[RuleResult] = []
        if released_n is not None:
            checked.append(RuleResult(rules.THRESHOLD, True, f"at least {t} complete records"))
        else:
            checked.append(
                RuleResult(
                    rules.THRESHOLD, False, f"fewer than {t} complete records, so it is withheld"
                )
            )
        if n - 1 >= t:
            checked.append(
                RuleResult(rules.SD_THRESHOLD, True, f"every variance rests on n - 1 >= {t}")
            )
        else:
            checked.append(
                RuleResult(
                    rules.SD_THRESHOLD,
                    False,
                    f"n - 1 is below {t}: the variances behind the correlations are withheld",
                )
            )
        if n > 0:
            checked += dominance.columns_dominance_rules(
                raw["contributions"], policy, what="the correlation matrix (the column means)"
            )
        checked.append(rules.count_rule(policy))
        checked.append(
            RuleResult(rules.EXTREMES, True, "the minimum and maximum are never released")
        )
        failed = [r for r in checked if not r.passed and r.rule != rules.REVIEW]
        if failed:
            return NodeOutput(Outcome.BLOCKED, {}, tuple(checked))
        payload = {
            "columns": list(raw["columns"]),
            "n": released_n,
            "n_model": release.model(n),
            "means": release.models(raw["means"]),
            "cross": release.models(raw["cross"]),
        }
        return NodeOutput(Outcome.RELEASED, payload, tuple(checked))

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        columns = p["columns"]
        size = len(columns)
        result: dict[str, Any] = {"columns": columns, "n": None, "matrix": None}
        if part.blocked or not part.included:
            return {**result, "withheld_by": part.blocked, "nodes": part.nodes}
        parts = []
        released_n = 0
        for node, payload in part.included.items():
            shown = as_count(payload.get("n"), node, "n") or 0
            exact = payload.get("n_model")
            parts.append(
                CrossProducts(
                    shown if exact is None else as_count(exact, node, "n_model") or 0,
                    as_vector(payload.get("means"), size, node, "means"),
                    as_matrix(payload.get("cross"), size, node, "cross"),
                )
            )
            released_n += shown
        pooled = pool_cross_products(parts)
        scale = np.sqrt(np.diag(pooled.cross))
        with np.errstate(divide="ignore", invalid="ignore"):
            matrix = pooled.cross / np.outer(scale, scale)
        np.fill_diagonal(matrix, 1.0)
        return {
            **result,
            "n": released_n,
            "matrix": [[finite_or_none(float(v)) for v in row] for row in matrix],
            "withheld_by": [],
            "nodes": part.nodes,
        }

    def to_frame(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> pd.DataFrame | None:
        """Return the matrix as a square DataFrame (columns x columns); None for a node payload."""
        import pandas as pd

        if "matrix" not in payload:
            return None
        columns = list(payload.get("columns") or [])
        matrix = payload.get("matrix")
        if matrix is None:
            values = np.full((len(columns), len(columns)), np.nan)
        else:
            values = np.array(
                [[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float
            )
        frame = pd.DataFrame(
            values, index=pd.Index(columns, dtype=object), columns=pd.Index(columns, dtype=object)
        )
        frame.attrs["n"] = payload.get("n")
        return frame
