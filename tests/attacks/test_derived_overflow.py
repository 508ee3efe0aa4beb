"""Attack class: a derived value that leaves the range of doubles for one record only.

`1e300 / d` is finite where d >= 1 and overflows where d is tiny, so

    I(sbp + 1e-300 * (1e300 / ((age - a) ** 2 + (diabetic - 1) ** 2 + 1e-300)))

is about sbp for everyone except a diabetic aged a, for whom it is infinite (SQLite,
DuckDB) or an error (PostgreSQL). Among the target's sex and region (the target the only
one aged a), an infinity made the summary's mean and sd missing (`released` with no
figures) and made a regression fail; so the outcome said whether the target is diabetic.

The defence (fedtre.analyses.expression_sql.compile_expression): a derived numeric that
is not finite is missing, which the differencing memory's question holds (see
test_derived_missingness.py).

Criterion: what the researcher receives is identical whether the target is diabetic or
not (two worlds, fresh agents, same TRE secret).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.disclosure.cellkey import keyed_source
from node_agent.sources.sql import open_sql_source

from .conftest import (
    COLUMNS,
    DATASET,
    GRIDS,
    Factory,
    assert_generic_block,
    public_view,
    secret_for,
    unique_targets,
)


def _infinite_for_a_diabetic_aged(column: str, age: int) -> str:
    tiny = f"((age - {age}) ** 2 + (diabetic - 1) ** 2 + 1e-300)"
    return f"I({column} + 1e-300 * (1e300 / {tiny}))"


def _target_and_cell(frame: pd.DataFrame) -> tuple[int, int, dict[str, Any]]:
    """A target no other diabetic shares an age with (in the whole dataset: PostgreSQL may
    compute a derived column for records outside the filter), their age and the filter of
    their sex and region."""
    target = next(
        t
        for t in unique_targets(frame)
        if not ((frame["age"] == frame.loc[t, "age"]) & (frame["diabetic"] == 1)).drop(t).any()
    )
    row = frame.loc[target]
    cell = {
        "and": [
            {"col": "sex", "op": "==", "value": str(row["sex"])},
            {"col": "region", "op": "==", "value": str(row["region"])},
        ]
    }
    return target, int(row["age"]), cell


def _worlds(frame: pd.DataFrame, target: int) -> list[pd.DataFrame]:
    worlds = []
    for diabetic in (0, 1):
        world = frame.copy()
        world.loc[target, "diabetic"] = diabetic
        worlds.append(world)
    return worlds


def _shape(view: Any) -> Any:
    """What an output says apart from its figures: outcome, rule families, error, and
    which values are present (a figure as 0, a missing one as None)."""
    outcome, payload, rules, error = view

    def present(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: present(v) for k, v in value.items()}
        if isinstance(value, list):
            return [present(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return 0
        return value

    return outcome, present(json.loads(payload)), rules, error


@pytest.mark.parametrize(
    ("analysis", "params"),
    [
        ("summary", {"column": "sbp"}),
        ("linear_regression", {"outcome": "age", "covariates": ["sbp"]}),
    ],
)
def test_a_value_infinite_only_for_the_target_says_nothing(
    factory: Factory, frame: pd.DataFrame, analysis: str, params: dict[str, Any]
) -> None:
    """The first question of its records: in both worlds the same outcome, rule families
    and figures present (the figures are those of the cell with or without the target, as
    for any cohort; a second question of the cell is refused, test_derived_missingness)."""
    target, age, cell = _target_and_cell(frame)
    derived = {
        k: _infinite_for_a_diabetic_aged(v, age)
        if k == "column"
        else [_infinite_for_a_diabetic_aged(c, age) for c in v]
        if k == "covariates"
        else v
        for k, v in params.items()
    }
    views = []
    for world in _worlds(frame, target):
        agent = factory.agent(factory.source(world))
        views.append(public_view(agent.ask(analysis, **derived, filter=cell)))

    assert _shape(views[0]) == _shape(views[1])
    assert views[0][0].value != "failed"


def test_a_derived_value_is_never_infinite(factory: Factory, frame: pd.DataFrame) -> None:
    """The guard itself: a derived numeric that overflows for every record is missing for
    every record, so a summary of it describes no record (blocked), never a failure."""
    agent = factory.agent(factory.source(frame))
    output = agent.ask("summary", column="I(sbp * 1e300 * 1e300)")
    assert_generic_block(output)


def _pg_source(frame: pd.DataFrame, url: str) -> DataSource:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        frame.to_sql(DATASET, conn, index=False)
    engine.dispose()
    raw = open_sql_source(DATASET, url, DATASET, COLUMNS)
    raw = replace(raw, schema=DatasetSchema(DATASET, dict(COLUMNS), dict(GRIDS)))
    return keyed_source(raw, secret_for("tre-a"), "pid")


@pytest.mark.xfail(
    strict=True,
    reason="known residual risk (docs/disclosure.md, threat model): PostgreSQL raises on a "
    "double's overflow instead of giving infinity, so a value that overflows for the target "
    "alone fails the task; guarding every operation needs each operand twice in the SQL",
)
def test_on_postgresql_an_overflow_for_the_target_alone_says_nothing(
    factory: Factory, frame: pd.DataFrame, pg_schema_url: tuple[str, sa.Engine, str]
) -> None:
    url, admin, schema = pg_schema_url
    target, age, cell = _target_and_cell(frame)
    column = _infinite_for_a_diabetic_aged("sbp", age)
    views = []
    for world in _worlds(frame, target):
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{schema}"."{DATASET}"'))
        source = _pg_source(world, url)
        try:
            agent = factory.agent(source)
            views.append(public_view(agent.ask("summary", column=column, filter=cell)))
        finally:
            source.engine.dispose()

    assert views[0] == views[1]
