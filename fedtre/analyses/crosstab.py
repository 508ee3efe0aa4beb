"""The crosstab analysis: one-way or two-way frequency tables of categorical columns.

Payloads (labels are strings, null is the NULL level; counts are floats after a Struct
round trip and are cast back to int by combine):

- node:     {"rows": col, "columns": col | null,
             "cells": [[row_label, column_label, n | null], ...],
             "margins": {"rows": [[label, n | null], ...],        (only with margins=true;
                         "columns": [[label, n | null], ...],      rows/columns only in a
                         "total": n | null}}                       two-way table)
  Each cell's count and cell key are computed in the engine in one GROUP BY; a margin's
  key is the combined key of its cells. Primary suppression (below the threshold, zero
  cells when zeros are disclosive) and secondary suppression (so that no withheld cell
  can be recovered from the totals, fedtre.disclosure.tables) decide on the TRUE counts;
  every released count then leaves through the release stage (perturbed by the cell-key
  method, or rounded if the TRE chose rounding). n is null when withheld. One-way: one
  entry per level present at the node, every column_label null. Two-way: the full grid
  of the row and column levels shown, zero cells included. A level beside which no
  non-zero figure (cell or total) is released is dropped, label and all, and nothing
  says that it was (no count of dropped levels leaves): its label alone would tell that
  someone in the cohort has that value. Dropping a level only ever happens beside a
  withheld figure, so only a SUPPRESSED output may have dropped levels.
- combined: node shape plus
             "withheld": [[row_label, column_label, [node, ...]], ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}
  Included nodes are those whose outcome is RELEASED or SUPPRESSED. Cells are the union
  over them; a cell absent at a RELEASED node (its level does not occur there) counts 0
  there. A cell or total is null, never a partial sum, when a node withheld it;
  "withheld" names those nodes. A SUPPRESSED node may have dropped levels, so at every
  label it did not report it may hold a withheld value: those cells and totals are null
  too, naming it. A BLOCKED node withheld every cell, so then every cell is null.
  REFUSED, FAILED and HELD nodes are left out and listed under "excluded". Every
  combined value is a sum of values the nodes released, so it reveals nothing a node
  withheld; it differs from the pooled count by at most (nodes) x noise_deviation.

Cells are ordered by row label, then column label: numeric labels numerically, then
other strings, then null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fedtre.analyses.base import (
    CATEGORICAL_TYPES,
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
)
from fedtre.analyses.filters import compile_filter
from fedtre.analyses.labels import category_label, label_key
from fedtre.analyses.params import (
    check_keys,
    column_param,
    column_problems,
    filter_param,
    raise_problems,
    schema_filter_problems,
)
from fedtre.analyses.pooling import as_count, as_label, as_rows, partition
from fedtre.disclosure import cellkey, release, tables
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy
    from fedtre.disclosure.differencing import Grouping, Labels

_EXAMPLE = '{"rows": "sex", "columns": "smoking"}'
Cell = tuple[str | None, str | None]
# The label of the totals row and column in a table frame with margins.
MARGINS_LABEL = "Total"


def _cell_key(cell: Cell) -> tuple[Any, ...]:
    return (label_key(cell[0]), label_key(cell[1]))


class CrosstabAnalysis(Analysis):
    """Frequency table of one categorical column, or of two crossed."""

    name = "crosstab"
    description = "Frequency table of one categorical column (rows) or two (rows x columns)."
    released_fields = {
        "rows": release.Kind.PARAMETER,
        "columns": release.Kind.PARAMETER,
        "cells.*.0": release.Kind.LABEL,
        "cells.*.1": release.Kind.LABEL,
        "cells.*.2": release.Kind.COUNT,
        "margins.total": release.Kind.COUNT,
        "margins.rows.*.0": release.Kind.LABEL,
        "margins.rows.*.1": release.Kind.COUNT,
        "margins.columns.*.0": release.Kind.LABEL,
        "margins.columns.*.1": release.Kind.COUNT,
    }

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("rows",),
            optional=("columns", "filter", "margins"),
            example=_EXAMPLE,
        )
        rows = column_param(p, "rows", analysis=self.name, example=_EXAMPLE)
        if rows is None:
            raise InvalidRequest(f"crosstab needs a 'rows' column, e.g. {_EXAMPLE}")
        columns = column_param(p, "columns", analysis=self.name, example=_EXAMPLE)
        if columns == rows:
            raise InvalidRequest(
                f"crosstab 'rows' and 'columns' are both {rows!r}; cross two different "
                "columns, or leave out 'columns' for a one-way table"
            )
        margins = p.get("margins", False)
        if margins is None:
            margins = False
        if not isinstance(margins, bool):
            raise InvalidRequest(
                "crosstab parameter 'margins' must be true or false (release the row, column "
                'and grand totals), e.g. {"rows": "sex", "margins": true}'
            )
        return {"rows": rows, "columns": columns, "filter": filter_param(p), "margins": margins}

    def groupings(self, params: Mapping[str, Any]) -> list[Grouping]:
        """Each cell, and each row and column total, is remembered like a cohort."""
        p = self.validate(params)
        if p["columns"] is None:
            return [(p["rows"],)]
        return [(p["rows"], p["columns"]), (p["rows"],), (p["columns"],)]

    def released_groups(
        self, params: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> set[tuple[Grouping, Labels]]:
        """The cells, and the row and column totals, whose counts the payload releases."""
        p = self.validate(params)
        rows, columns = p["rows"], p["columns"]
        if columns is None:
            return {((rows,), (c[0],)) for c in payload.get("cells", []) if c[2] is not None}
        found: set[tuple[Grouping, Labels]] = {
            ((rows, columns), (c[0], c[1])) for c in payload.get("cells", []) if c[2] is not None
        }
        margins = payload.get("margins") or {}
        found |= {((rows,), (m[0],)) for m in margins.get("rows", []) if m[1] is not None}
        found |= {((columns,), (m[0],)) for m in margins.get("columns", []) if m[1] is not None}
        return found

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        p = self.validate(params)
        problems: list[str] = []
        for role in ("rows", "columns"):
            problems += column_problems(
                p[role], role=role, schema=schema, allowed=CATEGORICAL_TYPES
            )
        return problems + schema_filter_problems(p["filter"], schema)

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        p = self.validate(params)
        raise_problems(self.name, self.schema_problems(p, source.schema))
        table, types = source.table, source.schema.columns
        names = [p["rows"]] + ([p["columns"]] if p["columns"] else [])
        keys = [table.c[name] for name in names]
        # Each cell's count and cell key in the same GROUP BY: no record reaches Python.
        key = cellkey.cell_key_sum(cellkey.record_key_of(source)).label("key")
        query = sa.select(*keys, sa.func.count().label("n"), key).group_by(*keys)
        if p["filter"] is not None:
            query = query.where(compile_filter(p["filter"], table))
        cells: dict[Cell, tuple[int, int]] = {}
        with source.engine.connect() as conn:
            for row in conn.execute(query):
                labels = [
                    category_label(v, types[name]) for v, name in zip(row[:-2], names, strict=True)
                ]
                cell = (labels[0], labels[1] if len(names) == 2 else None)
                # Two raw values may share a label (1 and 1.0): counts add, keys combine.
                n, k = cells.get(cell, (0, 0))
                cells[cell] = (n + int(row[-2]), cellkey.combine_keys([k, int(row[-1] or 0)]))
        if len(names) == 2:
            # The full grid: a combination absent here is a zero cell, judged like any cell.
            row_levels = {r for r, _ in cells}
            col_levels = {c for _, c in cells}
            for r in row_levels:
                for c in col_levels:
                    cells.setdefault((r, c), (0, 0))
        ordered = sorted(cells, key=_cell_key)
        return {"cells": [[r, c, *cells[(r, c)]] for r, c in ordered]}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        """Suppress on the true counts (tables.protect_table), release the rest through the
        release stage, and drop the levels beside which no non-zero figure is released.

        raw: {"cells": [[row_label, column_label, n, cell_key], ...]} (compute's output).
        """
        p = self.validate(params)
        cells = {(r, c): (int(n), int(k)) for r, c, n, k in raw["cells"]}
        protected = tables.protect_table(cells, policy, two_way=p["columns"] is not None)
        released: list[list[Any]] = [[r, c, protected.cells[(r, c)]] for r, c, *_ in raw["cells"]]
        payload: dict[str, Any] = {"rows": p["rows"], "columns": p["columns"], "cells": released}
        outcome = protected.outcome
        if outcome == Outcome.BLOCKED and p["margins"] and protected.total is not None:
            # every cell withheld, but the totals are safe and were asked for
            outcome = Outcome.SUPPRESSED
        if outcome == Outcome.BLOCKED:
            # nothing leaves a blocked output, not even which cells exist
            payload["cells"] = []
            return NodeOutput(outcome, payload, protected.rules)
        if p["margins"]:
            margins: dict[str, Any] = {"total": protected.total}
            if p["columns"] is not None:
                margins["rows"] = _labelled(protected.row_totals)
                margins["columns"] = _labelled(protected.column_totals)
            payload["margins"] = margins
        return NodeOutput(outcome, _drop_unsupported_levels(payload), protected.rules)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        p = self.validate(params)
        part = partition(outputs)
        totals: dict[Cell, int] = {}
        withheld: dict[Cell, list[str]] = {}
        for node, payload in part.included.items():
            for r, c, n in as_rows(payload, "cells", 3, node):
                cell = (as_label(r, node, "a row label"), as_label(c, node, "a column label"))
                count = as_count(n, node, "a cell count")
                if count is None:
                    withheld.setdefault(cell, []).append(node)
                else:
                    totals[cell] = totals.get(cell, 0) + count
        if part.blocked:
            for cell in set(totals) | set(withheld):
                withheld.setdefault(cell, []).extend(part.blocked)
        # A SUPPRESSED node may have dropped levels (nothing says which or how many), so it
        # may hold a withheld value at any label it did not report.
        suppressed = {
            node for node, out in outputs.items() if Outcome(out.outcome) is Outcome.SUPPRESSED
        }
        hid_rows = {n: _reported(0)(n, part.included[n]) for n in suppressed}
        hid_cols = {n: _reported(1)(n, part.included[n]) for n in suppressed}
        for r, c in set(totals) | set(withheld):
            for node in sorted(suppressed):
                absent = r not in hid_rows[node] or (
                    p["columns"] is not None and c not in hid_cols[node]
                )
                if absent and node not in withheld.get((r, c), []):
                    withheld.setdefault((r, c), []).append(node)
        ordered = sorted(set(totals) | set(withheld), key=_cell_key)
        combined: dict[str, Any] = {
            "rows": p["rows"],
            "columns": p["columns"],
            "cells": [[r, c, None if (r, c) in withheld else totals[(r, c)]] for r, c in ordered],
            "withheld": [
                [r, c, sorted(withheld[(r, c)])] for r, c in ordered if (r, c) in withheld
            ],
            "nodes": part.nodes,
        }
        if p["margins"]:
            combined["margins"] = _combine_margins(
                part.included, part.blocked, p, {"rows": hid_rows, "columns": hid_cols}
            )
        return combined

    def to_frame(self, params: Mapping[str, Any], payload: Mapping[str, Any]) -> pd.DataFrame:
        """Return the table: one-way, index = row labels and column "n"; two-way, rows x columns.

        Counts are nullable integers (Int64); withheld cells are <NA>; in a two-way table a combination absent everywhere is 0,
        unless a node blocked its whole table: then nobody knows it is 0, and it is NaN.
        Labels keep None for the NULL level (object-dtype index).
        """
        # Imported here: only the client makes frames; the services need not load pandas.
        import numpy as np
        import pandas as pd

        p = self.validate(params)
        cells = as_rows(payload, "cells", 3, "(payload)")
        row_labels = sorted({r for r, _, _ in cells}, key=label_key)
        row_index = pd.Index(row_labels, dtype=object, name=p["rows"])
        margins = payload.get("margins")
        if p["columns"] is None:
            values = {r: (np.nan if n is None else float(n)) for r, _, n in cells}
            frame = pd.DataFrame({"n": [values[r] for r in row_labels]}, index=row_index)
            if isinstance(margins, Mapping) and row_labels:
                total = pd.DataFrame({"n": [_nan(margins.get("total"))]}, index=[MARGINS_LABEL])
                frame = pd.concat([frame, total])
                frame.index.name = p["rows"]
            return frame.astype("Int64")
        col_labels = sorted({c for _, c, _ in cells}, key=label_key)
        excluded = payload.get("nodes", {}).get("excluded", {})
        withholding = {Outcome.BLOCKED.value, Outcome.HELD.value}
        absent = np.nan if withholding & set(excluded.values()) else 0.0
        grid = np.full((len(row_labels), len(col_labels)), absent)
        row_pos = {r: i for i, r in enumerate(row_labels)}
        col_pos = {c: j for j, c in enumerate(col_labels)}
        for r, c, n in cells:
            grid[row_pos[r], col_pos[c]] = np.nan if n is None else float(n)
        col_index = pd.Index(col_labels, dtype=object, name=p["columns"])
        frame = pd.DataFrame(grid, index=row_index, columns=col_index)
        if isinstance(margins, Mapping) and row_labels:
            row_totals = {r: n for r, n in margins.get("rows") or []}
            col_totals = {c: n for c, n in margins.get("columns") or []}
            frame[MARGINS_LABEL] = [_nan(row_totals.get(r)) for r in row_labels]
            bottom = [_nan(col_totals.get(c)) for c in col_labels] + [_nan(margins.get("total"))]
            frame.loc[MARGINS_LABEL] = bottom
            frame.index.name, frame.columns.name = p["rows"], p["columns"]
        # Nullable integers: counts print as counts, withheld cells as <NA>.
        return frame.astype("Int64")


def _drop_unsupported_levels(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep only the levels beside which a non-zero figure is released; label the rest.

    A dropped level's label would itself disclose that someone in the cohort has that
    value (say, age 97 in a table by age), and so would a label shown only beside zeros
    and withheld figures. Nothing says that (or how many) levels were dropped; the
    outcome (SUPPRESSED) already says that something was withheld. Kept labels pass the
    release stage as labels of released groups.
    """
    cells = payload["cells"]
    margins = payload.get("margins") or {}

    def supported(axis: int, totals: str) -> set[str | None]:
        labels = {cell[axis] for cell in cells if cell[2]}
        return labels | {label for label, n in margins.get(totals) or [] if n}

    rows_ok = supported(0, "rows")
    two_way = payload["columns"] is not None
    cols_ok = supported(1, "columns") if two_way else {None}
    kept = dict(payload)
    kept["cells"] = [
        [release.label(r), release.label(c), n]
        for r, c, n in cells
        if r in rows_ok and c in cols_ok
    ]
    if margins:
        kept["margins"] = dict(margins)
        for key, ok in (("rows", rows_ok), ("columns", cols_ok)):
            if key in margins:
                kept["margins"][key] = [
                    [release.label(label), n] for label, n in margins[key] if label in ok
                ]
    return kept


def _reported(axis: int) -> Callable[[str, Mapping[str, Any]], set[str | None]]:
    def labels_of(node: str, payload: Mapping[str, Any]) -> set[str | None]:
        return {as_label(c[axis], node, "a label") for c in as_rows(payload, "cells", 3, node)}

    return labels_of


def _labelled(values: Mapping[str | None, int | None]) -> list[list[Any]]:
    return [[label, values[label]] for label in sorted(values, key=label_key)]


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _combine_margins(
    included: Mapping[str, Mapping[str, Any]],
    blocked: list[str],
    p: Mapping[str, Any],
    hiders: Mapping[str, Mapping[str, set[str | None]]],
) -> dict[str, Any]:
    """Sum the nodes' released totals; a total withheld at any node (or at a label a
    SUPPRESSED node did not report), or any total when a node blocked, is null."""

    def combine(
        entries: dict[str, list[tuple[str | None, Any]]], hid: Mapping[str, set[str | None]]
    ) -> list[list[Any]]:
        sums: dict[str | None, int] = {}
        missing: set[str | None] = set()
        for node, pairs in entries.items():
            for label, n in pairs:
                label = as_label(label, node, "a total's label")
                count = as_count(n, node, "a total")
                if count is None:
                    missing.add(label)
                else:
                    sums[label] = sums.get(label, 0) + count
        for node, reported in hid.items():
            # a SUPPRESSED node's totals: a label it did not report anywhere may be withheld
            shown = reported | {
                as_label(label, node, "a total's label") for label, _ in entries.get(node, [])
            }
            missing |= (set(sums) | missing) - shown
        labels = sorted(set(sums) | missing, key=label_key)
        return [[lab, None if lab in missing or blocked else sums[lab]] for lab in labels]

    def pairs(node: str, margins: Any, key: str) -> list[tuple[str | None, Any]]:
        rows = margins.get(key) if isinstance(margins, Mapping) else None
        if rows is None:
            return []
        return [(r[0], r[1]) for r in as_rows(margins, key, 2, node)]

    result: dict[str, Any] = {}
    totals: list[int | None] = []
    by_node = {node: payload.get("margins") for node, payload in included.items()}
    for node, margins in by_node.items():
        if not isinstance(margins, Mapping):
            totals.append(None)
            continue
        totals.append(as_count(margins.get("total"), node, "the grand total"))
    result["total"] = (
        None if blocked or not totals or None in totals else sum(t for t in totals if t is not None)
    )
    if p["columns"] is not None:
        result["rows"] = combine(
            {n: pairs(n, m, "rows") for n, m in by_node.items()}, hiders["rows"]
        )
        result["columns"] = combine(
            {n: pairs(n, m, "columns") for n, m in by_node.items()}, hiders["columns"]
        )
    return result
