"""Regression designs shared by linear_regression and glm: covariates, levels, terms, pooling.

A model is `outcome ~ covariates` (plus an optional offset). Each covariate is written as
a column name, a derived variable (`log(bmi)`, `I(age ** 2)`, `bands(age, [40, 60])`,
`x:y`: fedtre.analyses.expressions, computed as a column of the source by
fedtre.analyses.derived) or as `C(either)`:

- a numeric column (integer or float) is one term, named after the column;
- a string or boolean column, or any integer, string or boolean column written `C(name)`,
  is categorical: with levels L0 < L1 < ... it contributes one indicator term per level
  except the reference L0, named as statsmodels' formula API names them:
  `smoking[T.former]`, `C(grade)[T.2]`, `smoker[T.True]`.

Levels are ordered as patsy orders them: strings lexicographically, integers numerically,
false before true. A level exists when some node has a record with it; the coordinator
takes the union of the levels the nodes report, so every node expands a covariate into
the same indicator columns (a level absent at a node is an all-zero column there). The
optional `levels` parameter fixes a covariate's levels and their order (the first is the
reference); a listed level that no node has, or a level found at a node but not listed,
is an error that names it.

Records are complete cases: a record with NULL in the outcome, any covariate or the
offset is left out (statsmodels' missing="drop").

At a node, design columns are SQL expressions (`CAST(age AS FLOAT)`, `CASE WHEN smoking =
'former' THEN 1.0 ELSE 0.0 END`), so the data source's engine computes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import CATEGORICAL_TYPES, NUMERIC_TYPES, DatasetSchema
from fedtre.analyses.contributors import top_values_of_columns
from fedtre.analyses.expressions import Call, canonical, normalise_column, parse_expression
from fedtre.analyses.filters import MAX_NAME, compile_filter
from fedtre.analyses.labels import category_label
from fedtre.analyses.pooling import malformed
from fedtre.disclosure.cellkey import cell_key_sum
from fedtre.disclosure.policy import MAX_DOMINANCE_N
from fedtre.errors import InvalidRequest
from fedtre.suggest import columns_hint

INTERCEPT = "Intercept"
NUMERIC = "numeric"
CATEGORICAL = "categorical"

# The kinds of a model payload's design report (released_fields of linear_regression and
# glm): the researcher's covariate specs, and the levels each node's data has.
DESIGN_FIELDS = {
    "covariates.*.0": "parameter",
    "covariates.*.1": "parameter",
    "covariates.*.2": "parameter",
    "covariates.*.3.*": "label",
    "basis.*.0": "parameter",
    "basis.*.1": "label",
}
MAX_COVARIATES = 100
MAX_LEVELS = 200
_FORCED = re.compile(r"^C\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Covariate:
    """One covariate as the researcher wrote it: `age`, or `C(grade)` to force categories."""

    spec: str
    column: str
    forced: bool

    def is_categorical(self, column_type: str) -> bool:
        """Return True when this covariate expands into level indicators."""
        return self.forced or column_type in ("string", "boolean")


def parse_covariate(spec: str) -> Covariate:
    """Return the covariate written `spec`: a column name, a derived variable such as log(x)
    or bands(age, [40, 60]) (fedtre.analyses.expressions), or C(either) to force categories.
    Raises InvalidRequest pointing at what cannot be read."""
    text = spec.strip() if isinstance(spec, str) else spec
    if isinstance(text, str) and _NAME.match(text) and len(text) <= MAX_NAME:
        return Covariate(text, text, False)
    try:
        tree = parse_expression(text).tree
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"covariate {spec!r} must be a column name, a derived variable such as log(x), or "
            f'C(name) to treat a column as categorical, e.g. ["age", "sex", "C(deprivation)"]: '
            f"{exc}"
        ) from None
    if isinstance(tree, Call) and tree.func == "C":
        if len(tree.args) != 1:
            raise InvalidRequest(f"covariate {spec!r}: C() takes one variable, e.g. C(grade)")
        column = canonical(tree.args[0])
        return Covariate(f"C({column})", column, True)
    return Covariate(canonical(tree), canonical(tree), False)


def covariates_param(params: Mapping[str, Any], *, analysis: str, example: str) -> list[str]:
    """Return the validated `covariates` list (may be empty: an intercept-only model)."""
    value = params.get("covariates", [])
    if value is None:
        value = []
    if isinstance(value, str) or not isinstance(value, list):
        raise InvalidRequest(
            f"{analysis} parameter 'covariates' must be a list of column names, e.g. {example}"
        )
    if len(value) > MAX_COVARIATES:
        raise InvalidRequest(f"{analysis} takes at most {MAX_COVARIATES} covariates")
    specs: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidRequest(
                f"{analysis} covariates must be column names (strings), e.g. {example}"
            )
        cov = parse_covariate(item.strip())
        if cov.spec in specs:
            raise InvalidRequest(f"{analysis} lists covariate {cov.spec!r} twice")
        if any(parse_covariate(s).column == cov.column for s in specs):
            raise InvalidRequest(
                f"{analysis} uses column {cov.column!r} twice in its covariates; list it once"
            )
        specs.append(cov.spec)
    return specs


def levels_param(
    params: Mapping[str, Any], covariates: Sequence[str], *, analysis: str
) -> dict[str, list[str]] | None:
    """Return the optional `levels` parameter: covariate -> its levels in order (first = reference)."""
    value = params.get("levels")
    if value is None:
        return None
    example = '{"smoking": ["never", "former", "current"]}'
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f"{analysis} parameter 'levels' must map categorical covariates to their levels "
            f"(the first is the reference), e.g. {example}"
        )
    levels: dict[str, list[str]] = {}
    for written, labels in value.items():
        # a derived covariate is named by its canonical text, however it is written here
        spec = parse_covariate(written).spec if isinstance(written, str) else written
        if spec not in covariates:
            raise InvalidRequest(
                f"{analysis} 'levels' names {spec!r}, which is not among the covariates "
                f"{list(covariates)}"
            )
        if (
            not isinstance(labels, list)
            or not labels
            or len(labels) > MAX_LEVELS
            or not all(isinstance(x, str | int | bool) and not isinstance(x, float) for x in labels)
        ):
            raise InvalidRequest(
                f"{analysis} 'levels' of {spec!r} must be a non-empty list of at most "
                f"{MAX_LEVELS} levels (strings, whole numbers or booleans), e.g. {example}"
            )
        shown = [_label_of_value(x) for x in labels]
        if len(set(shown)) != len(shown):
            raise InvalidRequest(f"{analysis} 'levels' of {spec!r} lists a level twice")
        levels[spec] = shown
    return levels


def _label_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text in ("True", "False"):
        return text.lower()
    return text


def column_param_name(
    params: Mapping[str, Any], key: str, *, analysis: str, example: str
) -> str | None:
    """Return the column under `key` (None when absent): a column name or a derived
    variable's canonical text (fedtre.analyses.expressions)."""
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{analysis} parameter {key!r} must be a column name, e.g. {example}")
    return normalise_column(value, what=f"{analysis} parameter {key!r}")


def covariate_problems(specs: Sequence[str], schema: DatasetSchema) -> list[str]:
    """Return why each covariate cannot be used with `schema` (empty when all can)."""
    problems: list[str] = []
    for spec in specs:
        cov = parse_covariate(spec)
        ctype = schema.columns.get(cov.column)
        if ctype is None:
            problems.append(
                f"covariate column {cov.column!r} is not declared in dataset {schema.name!r}"
                + columns_hint(cov.column, schema.columns)
            )
        elif cov.forced and ctype not in CATEGORICAL_TYPES:
            problems.append(
                f"covariate {spec!r}: column {cov.column!r} is {ctype}; C() takes an integer, "
                "string or boolean column"
            )
        elif not cov.forced and ctype not in NUMERIC_TYPES | {"string", "boolean"}:
            problems.append(
                f"covariate {spec!r} is a {ctype} column; use a numeric, string or boolean column"
            )
    return problems


# -- levels -------------------------------------------------------------------------------


def level_key(label: str, column_type: str) -> tuple[Any, ...]:
    """Sort key putting a categorical covariate's levels in patsy's order."""
    if column_type == "boolean":
        return (label == "true",)
    if column_type in NUMERIC_TYPES:
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)
    return (label,)


def order_levels(labels: Iterable[str], column_type: str) -> list[str]:
    return sorted(set(labels), key=lambda label: level_key(label, column_type))


def level_value(label: str, column_type: str) -> Any:
    """Return the value a level label stands for, to compare with the column in SQL."""
    if column_type == "boolean":
        return label == "true"
    if column_type == "integer":
        return int(label)
    if column_type == "float":
        return float(label)
    return label


def term_name(spec: str, label: str, column_type: str) -> str:
    """Return the statsmodels-style name of a level's indicator term, e.g. sex[T.M]."""
    if column_type == "boolean":
        label = {"true": "True", "false": "False"}.get(label, label)
    return f"{spec}[T.{label}]"


# -- at the node --------------------------------------------------------------------------


@dataclass(frozen=True)
class BasisColumn:
    """One column of a design (the intercept apart): a numeric covariate or a level indicator."""

    spec: str
    label: str | None

    def key(self) -> list[Any]:
        return [self.spec, self.label]


def complete_cases(
    table: sa.FromClause, columns: Iterable[str], filter_: Mapping[str, Any] | None
) -> list[sa.ColumnElement[bool]]:
    """Return the WHERE conditions of the model's records: the filter and no NULL in `columns`."""
    conditions: list[sa.ColumnElement[bool]] = [
        table.c[c].is_not(None) for c in dict.fromkeys(columns)
    ]
    if filter_ is not None:
        conditions.append(compile_filter(filter_, table))
    return conditions


def numeric_expr(table: sa.FromClause, column: str, column_type: str) -> sa.ColumnElement[Any]:
    """Return a column as a double-precision SQL expression (booleans as 1.0 / 0.0)."""
    col = table.c[column]
    if column_type == "boolean":
        return sa.case((col == sa.true(), 1.0), else_=0.0)
    return sa.cast(col, sa.Double)


def basis_expr(
    table: sa.FromClause, column: BasisColumn, types: Mapping[str, str]
) -> sa.ColumnElement[Any]:
    """Return the SQL expression of one design column."""
    cov = parse_covariate(column.spec)
    ctype = types[cov.column]
    if column.label is None:
        return numeric_expr(table, cov.column, ctype)
    value = sa.literal(level_value(column.label, ctype), table.c[cov.column].type)
    return sa.case((table.c[cov.column] == value, 1.0), else_=0.0)


def local_levels(
    conn: sa.Connection,
    table: sa.FromClause,
    specs: Sequence[str],
    types: Mapping[str, str],
    conditions: Sequence[sa.ColumnElement[bool]],
) -> dict[str, dict[str, int]]:
    """Return, per categorical covariate, the record count of each level present (one query each)."""
    found: dict[str, dict[str, int]] = {}
    for spec in specs:
        cov = parse_covariate(spec)
        ctype = types[cov.column]
        if not cov.is_categorical(ctype):
            continue
        col = table.c[cov.column]
        counts: dict[str, int] = {}
        for value, n in conn.execute(
            sa.select(col, sa.func.count()).where(*conditions).group_by(col)
        ):
            label = category_label(value, ctype)
            if label is None:
                continue
            counts[label] = counts.get(label, 0) + int(n)
        if len(counts) > MAX_LEVELS:
            raise InvalidRequest(
                f"covariate {spec!r} has more than {MAX_LEVELS} levels at this node; "
                "group it into fewer categories"
            )
        found[spec] = counts
    return found


@dataclass(frozen=True)
class ModelRecords:
    """What a node knows of a model's records (complete cases), never released as such.

    n: the exact number of records; key: their cell key (SUM(record key) mod 256), for
    the released n; magnitudes: per numeric model column (outcome, numeric covariates),
    its largest absolute values (descending) and the sum of its absolute values, for the
    dominance rules; extra: the values of the caller's extra aggregates.
    """

    n: int
    key: int
    magnitudes: dict[str, tuple[list[float], float]]
    extra: list[Any]


def model_records(
    conn: sa.Connection,
    record_key: sa.ColumnElement[int],
    columns: Mapping[str, sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    extra: Sequence[sa.ColumnElement[Any]] = (),
) -> ModelRecords:
    """Count the model's records, their cell key and each column's absolute total in one
    query (with the caller's `extra` aggregates), then each column's largest absolute
    values (contributors.top_values_of_columns: a bounded sort per column, in one scan).

    record_key: cellkey.record_key_of(source), taken before the connection is opened
    (for a test source it registers SQLite's hash on connections checked out after it).
    Everything runs in the source's engine; no record reaches Python.
    """
    names = list(columns)
    sizes_of = {name: sa.func.abs(columns[name]) for name in names}
    sums = [sa.func.sum(sizes_of[c]) for c in names]
    row = conn.execute(
        sa.select(sa.func.count(), cell_key_sum(record_key), *sums, *extra).where(*conditions)
    ).one()
    n, key = int(row[0]), int(row[1] or 0)
    totals = [float(v or 0.0) for v in row[2 : 2 + len(names)]]
    tops = top_values_of_columns(conn, sizes_of, conditions, limit=MAX_DOMINANCE_N) if n > 0 else {}
    magnitudes = {
        name: (tops.get(name, []), total) for name, total in zip(names, totals, strict=True)
    }
    return ModelRecords(n, key, magnitudes, list(row[2 + len(names) :]))


def max_leverage(
    conn: sa.Connection,
    columns: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    n: int,
    means: Sequence[float] | None = None,
    cross: np.ndarray | None = None,
) -> float | None:
    """Return the largest leverage h_i = 1/n + (x_i - mean)' C^+ (x_i - mean) of the model's
    records (C: the centred cross-products of the design columns, C^+ its pseudo-inverse,
    so the reference level of a categorical covariate may be in or out), or None when there
    are no records. A record with leverage h weighs h in its own fitted value: 1 means the
    model reproduces it (a covariate that singles it out).

    means and cross, when the caller has them, spare two passes; the maximum is one more
    aggregate in the engine (the quadratic form written out over the centred columns),
    so no record reaches Python.
    """
    if n <= 0:
        return None
    if not columns:
        return 1.0 / n
    if means is None or cross is None:
        means = [
            float(v or 0.0)
            for v in conn.execute(
                sa.select(*(sa.func.avg(c) for c in columns)).where(*conditions)
            ).one()
        ]
        centred = [c - sa.literal(m, sa.Double) for c, m in zip(columns, means, strict=True)]
        size = len(columns)
        pairs = [(i, j) for i in range(size) for j in range(i, size)]
        sums = conn.execute(
            sa.select(*(sa.func.sum(centred[i] * centred[j]) for i, j in pairs)).where(*conditions)
        ).one()
        cross = np.zeros((size, size))
        for (i, j), value in zip(pairs, sums, strict=True):
            cross[i, j] = cross[j, i] = float(value or 0.0)
    # The centred columns once, in a subquery; the form refers to them by name, and its
    # weights (our own floats) are written into the SQL rather than bound one by one.
    centred_query = sa.select(
        *(
            (c - sa.literal_column(repr(float(m)), sa.Double)).label(f"c{i}")
            for i, (c, m) in enumerate(zip(columns, means, strict=True))
        )
    ).where(*conditions)
    rows = centred_query.subquery("centred")
    inverse = np.linalg.pinv(np.asarray(cross, dtype=float), rcond=1e-10, hermitian=True)
    size = len(columns)
    # The form as SQL text over the subquery's column names: only our own floats and
    # names, no value from a user; a text keeps the statement small for any number of
    # design columns (an expression tree of p^2 terms costs Python more than the query).
    terms = [
        f"{float(inverse[i, j] * (1 if i == j else 2))!r} * centred.c{i} * centred.c{j}"
        for i in range(size)
        for j in range(i, size)
        if inverse[i, j] != 0.0
    ]
    if not terms:
        return 1.0 / n
    form = sa.literal_column(f"max({' + '.join(terms)})", sa.Double)
    largest = conn.execute(sa.select(form).select_from(rows)).scalar_one()
    return 1.0 / n + float(largest or 0.0)


def node_basis(
    specs: Sequence[str],
    types: Mapping[str, str],
    levels: Mapping[str, Sequence[str]],
    *,
    drop_reference: bool,
) -> list[BasisColumn]:
    """Return the design columns, intercept apart, in covariate order.

    levels gives each categorical covariate's levels in order; with drop_reference the
    first (the reference) gets no column, as in the model; without, every level has one.
    """
    basis: list[BasisColumn] = []
    for spec in specs:
        cov = parse_covariate(spec)
        if cov.is_categorical(types[cov.column]):
            labels = list(levels.get(spec, ()))
            basis += [BasisColumn(spec, label) for label in labels[1 if drop_reference else 0 :]]
        else:
            basis.append(BasisColumn(spec, None))
    return basis


def covariate_report(
    specs: Sequence[str], types: Mapping[str, str], levels: Mapping[str, Mapping[str, int]]
) -> list[list[Any]]:
    """Return what a node tells the coordinator of each covariate: [spec, kind, type, levels]."""
    report: list[list[Any]] = []
    for spec in specs:
        cov = parse_covariate(spec)
        ctype = types[cov.column]
        if cov.is_categorical(ctype):
            report.append([spec, CATEGORICAL, ctype, order_levels(levels.get(spec, {}), ctype)])
        else:
            report.append([spec, NUMERIC, ctype, []])
    return report


# -- at the coordinator -------------------------------------------------------------------


@dataclass(frozen=True)
class GlobalDesign:
    """The model's design agreed across nodes.

    kinds: per covariate, (NUMERIC or CATEGORICAL, column type of a categorical);
    levels: each categorical covariate's levels in order (the first is the reference);
    full: every design column including reference levels (the union basis);
    kept: the positions in `full` that are model terms (reference levels dropped);
    terms: the model's term names, "Intercept" first.
    """

    covariates: tuple[str, ...]
    kinds: Mapping[str, tuple[str, str]]
    levels: Mapping[str, list[str]]
    full: tuple[BasisColumn, ...]
    kept: tuple[int, ...]
    terms: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "covariates": list(self.covariates),
            "kinds": {k: list(v) for k, v in self.kinds.items()},
            "levels": {k: list(v) for k, v in self.levels.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GlobalDesign:
        kinds = {k: (str(v[0]), str(v[1])) for k, v in data["kinds"].items()}
        return build_design(list(data["covariates"]), kinds, dict(data["levels"]))

    def index(self) -> dict[tuple[str, str | None], int]:
        return {(c.spec, c.label): i for i, c in enumerate(self.full)}


def build_design(
    covariates: Sequence[str],
    kinds: Mapping[str, tuple[str, str]],
    levels: Mapping[str, Sequence[str]],
) -> GlobalDesign:
    full: list[BasisColumn] = []
    kept: list[int] = []
    terms = [INTERCEPT]
    for spec in covariates:
        kind, ctype = kinds[spec]
        if kind == NUMERIC:
            kept.append(len(full))
            full.append(BasisColumn(spec, None))
            terms.append(spec)
            continue
        for i, label in enumerate(levels[spec]):
            if i > 0:
                kept.append(len(full))
                terms.append(term_name(spec, label, ctype))
            full.append(BasisColumn(spec, label))
    return GlobalDesign(
        tuple(covariates),
        dict(kinds),
        {k: list(v) for k, v in levels.items()},
        tuple(full),
        tuple(kept),
        tuple(terms),
    )


def unify_design(
    covariates: Sequence[str],
    reports: Mapping[str, Any],
    requested: Mapping[str, Sequence[str]] | None,
) -> GlobalDesign:
    """Agree the design from each node's covariate report (see covariate_report).

    Raises InvalidRequest when nodes disagree on whether a covariate is categorical or on
    its column type, when a requested level exists at no node, or when a node has a level
    the request does not list.
    """
    kinds: dict[str, tuple[str, str]] = {}
    found: dict[str, set[str]] = {}
    for node, report in sorted(reports.items()):
        if not isinstance(report, list) or len(report) != len(covariates):
            raise malformed(node, "its covariates do not match the request")
        for entry, spec in zip(report, covariates, strict=True):
            if not isinstance(entry, list) or len(entry) != 4 or entry[0] != spec:
                raise malformed(node, "its covariates do not match the request")
            kind, ctype, labels = entry[1], str(entry[2]), entry[3]
            if kind not in (NUMERIC, CATEGORICAL) or not isinstance(labels, list):
                raise malformed(node, f"covariate {spec!r} is malformed")
            known = kinds.get(spec)
            this = (kind, ctype if kind == CATEGORICAL else "")
            if known is not None and known != this:
                raise InvalidRequest(
                    f"covariate {spec!r} is declared differently across nodes ({_kind(known)} "
                    f"at some, {_kind(this)} at node {node!r}); ask the TREs to declare "
                    "the column with one type, or write C(name) to treat it as categorical"
                )
            kinds[spec] = this
            if kind == CATEGORICAL:
                found.setdefault(spec, set()).update(str(x) for x in labels)
    levels: dict[str, list[str]] = {}
    for spec, (kind, ctype) in kinds.items():
        if kind != CATEGORICAL:
            if requested and spec in requested:
                raise InvalidRequest(
                    f"'levels' are given for {spec!r}, which is numeric; write C({spec}) to "
                    "treat it as categorical"
                )
            continue
        present = found.get(spec, set())
        if requested and spec in requested:
            wanted = list(requested[spec])
            nowhere = [x for x in wanted if x not in present]
            if nowhere:
                raise InvalidRequest(
                    f"level(s) {nowhere} of covariate {spec!r} exist at no node (among the "
                    "model's records); remove them from 'levels'"
                )
            unlisted = order_levels(present - set(wanted), ctype)
            if unlisted:
                raise InvalidRequest(
                    f"covariate {spec!r} has level(s) {unlisted} that 'levels' does not list; "
                    "add them, or leave their records out with a filter"
                )
            levels[spec] = wanted
        else:
            if not present:
                raise InvalidRequest(f"covariate {spec!r} has no levels at any node")
            levels[spec] = order_levels(present, ctype)
    return build_design(covariates, kinds, levels)


def _kind(kind: tuple[str, str]) -> str:
    return f"categorical {kind[1]}" if kind[0] == CATEGORICAL else "numeric"


def expand(design: GlobalDesign, basis: Any, node: str) -> np.ndarray:
    """Return the positions in the design's full basis of a node's own design columns.

    Raises a malformed-payload error when the node sent a column the design does not know.
    """
    if not isinstance(basis, list):
        raise malformed(node, "its design columns are not a list")
    index = design.index()
    positions: list[int] = []
    for item in basis:
        if not isinstance(item, list) or len(item) != 2:
            raise malformed(node, "a design column is malformed")
        key = (str(item[0]), None if item[1] is None else str(item[1]))
        if key not in index:
            raise malformed(node, f"design column {key} is not in the agreed design")
        positions.append(index[key])
    return np.asarray(positions, dtype=int)


# -- pooled cross-products ----------------------------------------------------------------


@dataclass(frozen=True)
class CrossProducts:
    """n, column means and centred cross-products (sum of (x - mean)(x - mean)')."""

    n: int
    means: np.ndarray
    cross: np.ndarray


def pool_cross_products(parts: Sequence[CrossProducts]) -> CrossProducts:
    """Return the cross-products of the union of disjoint record sets (Chan et al., in matrix form).

    mean = sum(n_k mean_k) / n and C = sum(C_k + n_k d_k d_k') with d_k = mean_k - mean:
    exact, and stable because each C_k is centred on its own mean.
    """
    parts = [p for p in parts if p.n > 0]
    if not parts:
        raise InvalidRequest("no records to combine")
    n = sum(p.n for p in parts)
    mean = sum((p.n * p.means for p in parts), np.zeros_like(parts[0].means)) / n
    cross = np.zeros_like(parts[0].cross)
    for p in parts:
        d = p.means - mean
        cross += p.cross + p.n * np.outer(d, d)
    return CrossProducts(n, mean, cross)


def as_matrix(value: Any, size: int, node: str, what: str) -> np.ndarray:
    """Return a released square matrix as a float array, checked for shape and finiteness."""
    try:
        matrix = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise malformed(node, f"{what} is not a matrix of numbers") from None
    if matrix.shape != (size, size) or not np.all(np.isfinite(matrix)):
        raise malformed(node, f"{what} is not a finite {size} x {size} matrix")
    return matrix


def as_vector(value: Any, size: int, node: str, what: str) -> np.ndarray:
    """Return a released vector as a float array, checked for length and finiteness."""
    try:
        vector = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise malformed(node, f"{what} is not a list of numbers") from None
    if vector.shape != (size,) or not np.all(np.isfinite(vector)):
        raise malformed(node, f"{what} is not a finite list of {size} numbers")
    return vector


def finite_or_none(value: float) -> float | None:
    """Return value, or None when it is NaN or infinite (JSON and the wire hold neither)."""
    return float(value) if math.isfinite(value) else None
