"""The crosstab analysis: one-way or two-way frequency tables of categorical columns.

Payloads (labels are strings, null is the NULL level; counts are floats after a Struct
round trip and are cast back to int by combine):

- node:     {"rows": col, "columns": col | null,
             "cells": [[row_label, column_label, n | null], ...]}
  One entry per combination present at the node; n is rounded to the policy's base and
  null when withheld. In a one-way table ("columns": null) every column_label is null.
- combined: node shape plus
             "withheld": [[row_label, column_label, [node, ...]], ...],
             "nodes": {"included": [node, ...], "excluded": {node: outcome}}
  Included nodes are those whose outcome is RELEASED or SUPPRESSED. Cells are the union
  over them; a cell absent at a node counts 0 there. A cell is null, never a partial
  sum, when a node withheld it; "withheld" names those nodes. A BLOCKED node withheld
  every cell, so then every cell is null. REFUSED and FAILED nodes are left out and
  listed under "excluded".

Cells are ordered by row label, then column label: numeric labels numerically, then
other strings, then null.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from fedtre.disclosure import rules
from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from fedtre.disclosure import DisclosurePolicy

_EXAMPLE = '{"rows": "sex", "columns": "smoking"}'
Cell = tuple[str | None, str | None]


def _cell_key(cell: Cell) -> tuple[Any, ...]:
    return (label_key(cell[0]), label_key(cell[1]))


class CrosstabAnalysis(Analysis):
    """Frequency table of one categorical column, or of two crossed."""

    name = "crosstab"
    description = "Frequency table of one categorical column (rows) or two (rows x columns)."

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(
            params,
            analysis=self.name,
            required=("rows",),
            optional=("columns", "filter"),
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
        return {"rows": rows, "columns": columns, "filter": filter_param(p)}

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
        query = sa.select(*keys, sa.func.count().label("n")).group_by(*keys)
        if p["filter"] is not None:
            query = query.where(compile_filter(p["filter"], table))
        cells: dict[Cell, int] = {}
        with source.engine.connect() as conn:
            for row in conn.execute(query):
                labels = [
                    category_label(v, types[name]) for v, name in zip(row[:-1], names, strict=True)
                ]
                cell = (labels[0], labels[1] if len(names) == 2 else None)
                # Two raw values may share a label (1 and 1.0): their counts add up.
                cells[cell] = cells.get(cell, 0) + int(row[-1])
        ordered = sorted(cells, key=_cell_key)
        return {"cells": [[r, c, cells[(r, c)]] for r, c in ordered]}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        p = self.validate(params)
        cells = raw["cells"]
        checked = rules.check_cells([int(n) for _, _, n in cells], policy)
        released = [[r, c, v] for (r, c, _), v in zip(cells, checked.values, strict=True)]
        if checked.outcome == Outcome.BLOCKED:
            released = []  # nothing leaves a blocked output, not even which cells exist
        payload = {"rows": p["rows"], "columns": p["columns"], "cells": released}
        return NodeOutput(checked.outcome, payload, checked.rules)

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
        ordered = sorted(set(totals) | set(withheld), key=_cell_key)
        return {
            "rows": p["rows"],
            "columns": p["columns"],
            "cells": [[r, c, None if (r, c) in withheld else totals[(r, c)]] for r, c in ordered],
            "withheld": [
                [r, c, sorted(withheld[(r, c)])] for r, c in ordered if (r, c) in withheld
            ],
            "nodes": part.nodes,
        }

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
        if p["columns"] is None:
            values = {r: (np.nan if n is None else float(n)) for r, _, n in cells}
            frame = pd.DataFrame({"n": [values[r] for r in row_labels]}, index=row_index)
            return frame.astype("Int64")
        col_labels = sorted({c for _, c, _ in cells}, key=label_key)
        excluded = payload.get("nodes", {}).get("excluded", {})
        absent = np.nan if Outcome.BLOCKED.value in excluded.values() else 0.0
        grid = np.full((len(row_labels), len(col_labels)), absent)
        row_pos = {r: i for i, r in enumerate(row_labels)}
        col_pos = {c: j for j, c in enumerate(col_labels)}
        for r, c, n in cells:
            grid[row_pos[r], col_pos[c]] = np.nan if n is None else float(n)
        col_index = pd.Index(col_labels, dtype=object, name=p["columns"])
        # Nullable integers: counts print as counts, withheld cells as <NA>.
        return pd.DataFrame(grid, index=row_index, columns=col_index).astype("Int64")
