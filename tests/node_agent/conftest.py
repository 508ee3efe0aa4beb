"""Fixtures for the node agent's tests: a test-only analysis, a cohort database, config files."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fedtre.analyses.base import (
    Analysis,
    DatasetSchema,
    DataSource,
    NodeOutput,
    Outcome,
    RuleResult,
)
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.errors import InvalidRequest

COHORT_COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}


class RowCount(Analysis):
    """Test-only analysis: counts rows, optionally requiring some columns to be non-null."""

    name = "rowcount"
    description = "number of rows (test only)"
    released_fields = {"n": "count"}

    def __init__(self) -> None:
        self.computed = 0

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {"columns"})
        if unknown:
            raise InvalidRequest(f"unknown parameter(s) {unknown}")
        columns = params.get("columns", [])
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InvalidRequest("columns must be a list of column names")
        return {"columns": list(columns)}

    def schema_problems(self, params: Mapping[str, Any], schema: DatasetSchema) -> list[str]:
        return [
            f"column {c!r} is not declared in dataset {schema.name!r}"
            for c in params["columns"]
            if c not in schema.columns
        ]

    def compute(self, params: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
        self.computed += 1
        query = sa.select(sa.func.count()).select_from(source.table)
        for column in params["columns"]:
            query = query.where(source.table.c[column].is_not(None))
        with source.engine.connect() as conn:
            return {"n": conn.execute(query).scalar_one()}

    def check(
        self, params: Mapping[str, Any], raw: Mapping[str, Any], policy: DisclosurePolicy
    ) -> NodeOutput:
        n = raw["n"]
        if n < policy.threshold:
            rule = RuleResult("threshold", False, f"n below {policy.threshold}")
            return NodeOutput(Outcome.BLOCKED, {}, (rule,))
        # Rounded (not perturbed) so these tests can state the released value.
        rounded = release.count(n, 0, replace(policy, perturbation="rounding"))
        return NodeOutput(Outcome.RELEASED, {"n": rounded}, (RuleResult("threshold", True, ""),))

    def combine(self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]) -> dict:
        return {"n": sum(o.payload["n"] for o in outputs.values())}


@pytest.fixture
def row_count() -> RowCount:
    return RowCount()


@pytest.fixture
def cohort_db(tmp_path: Path) -> Path:
    """A SQLite file with a 'cohort' table of 23 rows (bmi null in 3) and a 'secret' column."""
    path = tmp_path / "data" / "cohort.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cohort (age INTEGER, sex TEXT, bmi REAL, secret TEXT)")
    rows = [(20 + i, "F" if i % 2 else "M", None if i < 3 else 20.0 + i, "x") for i in range(23)]
    conn.executemany("INSERT INTO cohort VALUES (?, ?, ?, ?)", rows)
    conn.execute("CREATE VIEW adults AS SELECT age, sex FROM cohort WHERE age >= 30")
    conn.commit()
    conn.close()
    return path


# The declared columns of cohort_db's table (its 'secret' column is not declared).
COHORT_COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}


@pytest.fixture
def source(cohort_db: Path) -> Iterator[DataSource]:
    """cohort_db's cohort table opened as an agent opens a SQL data source."""
    from node_agent.sources.sql import open_sql_source

    s = open_sql_source("cohort", f"sqlite:///{cohort_db}", "cohort", COHORT_COLUMNS)
    yield s
    s.engine.dispose()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Any]:
    """A fresh agent state database."""
    from node_agent.state import AgentState

    with AgentState(tmp_path / "agent-state.sqlite") as s:
        yield s


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A folder with placeholder ca.pem, cert.pem and key.pem (config loading only checks paths)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("ca", "cert", "key"):
        (bundle / f"{name}.pem").write_text("placeholder\n")
    return bundle


@pytest.fixture
def write_toml(tmp_path: Path, tls_dir: Path) -> Callable[[str], Path]:
    """Write a config file in tmp_path with the given text and return its path."""

    def write(text: str, name: str = "agent.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
