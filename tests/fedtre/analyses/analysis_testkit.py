"""Test helpers: SQLite nodes built from DataFrames, Struct round trips, a federated run."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from google.protobuf import json_format, struct_pb2

from fedtre.analyses import Analysis, DatasetSchema, DataSource, NodeOutput
from fedtre.disclosure import DisclosurePolicy

TABLE = "records"

# What the nodes declare. nhs_number is in every file but never declared.
SCHEMA = DatasetSchema(
    name="cohort",
    columns={
        "age": "integer",
        "sex": "string",
        "smoking": "string",
        "bmi": "float",
        "diabetic": "boolean",
        "site": "integer",
        "visit_date": "date",
    },
    # the TRE's grids for released bounds (histogram, quantiles, survival)
    grids={"age": 1.0, "bmi": 0.1, "site": 1.0},
)

# Every rule off, so federated results can be compared with pooled ones exactly.
# No disclosure control at all: counts exact (rounding to 1, no cell-key noise), no
# magnitude noise, no dominance; for checking the mathematics against the pooled data.
EXACT = DisclosurePolicy(
    threshold=0,
    rounding_base=1,
    zeros_disclosive=False,
    dominance_n=0,
    p_percent=0,
    perturbation="rounding",
    magnitude_noise=0,
)


def cohort(n: int, seed: int) -> pd.DataFrame:
    """A random pooled cohort with missing values in most columns."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 95, n).astype(float)
    age[rng.random(n) < 0.05] = np.nan
    bmi = rng.normal(27.0, 5.0, n)
    bmi[rng.random(n) < 0.1] = np.nan
    # site holds NULLs, so pandas writes it as REAL: labels must still read "1", not "1.0".
    site = rng.integers(1, 7, n).astype(float)
    site[rng.random(n) < 0.05] = np.nan
    start = dt.date(2015, 1, 1)
    return pd.DataFrame(
        {
            "age": age,
            "sex": pd.Series(rng.choice(["F", "M", None], n, p=[0.48, 0.47, 0.05]), dtype=object),
            "smoking": pd.Series(
                rng.choice(["never", "former", "current", None], n, p=[0.5, 0.25, 0.2, 0.05]),
                dtype=object,
            ),
            "bmi": bmi,
            "diabetic": rng.random(n) < 0.15,
            "site": site,
            "visit_date": [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 3000, n)],
            "nhs_number": rng.integers(10**9, 10**10, n),
        }
    )


def split(df: pd.DataFrame, sizes: Sequence[int]) -> list[pd.DataFrame]:
    """Split `df` into consecutive parts of the given sizes (which must add up to len(df))."""
    assert sum(sizes) == len(df)
    bounds = np.cumsum([0, *sizes])
    return [
        df.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


# The agent may declare the table from the declared types instead of reflecting it, so the
# SQL types need not match what the file stores (e.g. REAL values in an Integer column).
DECLARED_SQL_TYPES = {
    "integer": sa.Integer,
    "float": sa.Float,
    "string": sa.String,
    "boolean": sa.Boolean,
    "date": sa.Date,
}


def make_source(
    path: Path, df: pd.DataFrame, schema: DatasetSchema = SCHEMA, *, declared: bool = False
) -> DataSource:
    """Write `df` to a fresh SQLite file and expose only the declared columns.

    declared=False reflects the table; declared=True declares it from the schema's types.
    """
    engine = sa.create_engine(f"sqlite:///{path}")
    df.to_sql(TABLE, engine, index=False)
    if declared:
        columns = (sa.Column(c, DECLARED_SQL_TYPES[t]()) for c, t in schema.columns.items())
        table = sa.Table(TABLE, sa.MetaData(), *columns)
    else:
        table = sa.Table(
            TABLE, sa.MetaData(), autoload_with=engine, include_columns=list(schema.columns)
        )
    return DataSource(engine=engine, table=table, schema=schema)


def make_nodes(
    tmp_path: Path, parts: Sequence[pd.DataFrame], *, declared: bool = False
) -> dict[str, DataSource]:
    return {
        f"tre-{i}": make_source(tmp_path / f"node{i}.db", part, declared=declared)
        for i, part in enumerate(parts)
    }


def roundtrip(value: Mapping[str, Any]) -> dict[str, Any]:
    """What a payload or params look like after crossing the wire in a google.protobuf.Struct."""
    return json_format.MessageToDict(json_format.ParseDict(dict(value), struct_pb2.Struct()))


def run_node(
    analysis: Analysis, params: Mapping[str, Any], source: DataSource, policy: DisclosurePolicy
) -> NodeOutput:
    """What an agent does: validate, check the schema, compute, check disclosure; then the wire."""
    p = analysis.validate(roundtrip(params))
    assert analysis.schema_problems(p, source.schema) == []
    out = analysis.check(p, analysis.compute(p, source), policy)
    return dataclasses.replace(out, payload=roundtrip(out.payload))


def run_federated(
    analysis: Analysis,
    params: Mapping[str, Any],
    nodes: Mapping[str, DataSource],
    policy: DisclosurePolicy = EXACT,
) -> dict[str, Any]:
    """Run `analysis` at every node and combine at the 'coordinator'.

    Params and node payloads cross a Struct as they do on the wire; the combined result
    is checked to survive one too (it is stored in Job.combined), then returned as made.
    """
    outputs = {node: run_node(analysis, params, src, policy) for node, src in nodes.items()}
    combined = analysis.combine(analysis.validate(roundtrip(params)), outputs)
    assert roundtrip(combined) == combined
    return combined


def numbers_in(value: Any) -> list[float]:
    """Every number anywhere inside a JSON-like value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, Mapping):
        return [x for v in value.values() for x in numbers_in(v)]
    return [x for v in value for x in numbers_in(v)]
