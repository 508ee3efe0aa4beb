"""Pushdown: the data source's engine aggregates; the agent never holds the table.

Each analysis runs against a real SQLite file through a recording engine: every statement
sent is captured (SQLAlchemy's before_cursor_execute), and every row fetched back is
counted by a cursor subclass, as is the size asked of each fetchmany. Python's own
allocations during compute are traced (tracemalloc) to show no copy of the table appears.

This covers the analyses' computation. The executor's differencing rule, run before it,
reads one fingerprint per record of the cohort by design (fedtre.disclosure.differencing;
its cost is measured in bench/README.md).
"""

from __future__ import annotations

import re
import sqlite3
import tracemalloc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from fedtre.analyses import CATALOGUE, glm
from fedtre.analyses.base import DataSource
from fedtre.analyses.iterative import IterativeAnalysis
from fedtre.disclosure.policy import MAX_DOMINANCE_N
from node_agent.sources.sql import open_sql_source

N_ROWS = 20_000
COLUMNS = {
    "age": "integer",
    "sex": "string",
    "smoking": "string",
    "deprivation": "integer",
    "bmi": "float",
    "sbp": "float",
    "diabetes": "integer",
}
# A table of N_ROWS held in Python would take megabytes; the aggregates take kilobytes.
TABLE_IN_PYTHON_BYTES = N_ROWS * len(COLUMNS) * 24
AGGREGATE_FUNCTIONS = re.compile(r"\b(count|sum|avg|min|max)\(", re.IGNORECASE)
# The dominance rule's top-k queries: a ranking inside the engine, at most k rows per group
# out (a window over the groups, or one group's ORDER BY ... LIMIT on SQLite).
TOP_K = re.compile(
    r"row_number\(\) OVER .* WHERE anon_1\.rn <= \?|ORDER BY [^?]+ DESC LIMIT \? OFFSET \?$",
    re.IGNORECASE,
)


@dataclass
class Recorder:
    """What one engine was sent and what came back through its cursors."""

    statements: list[str] = field(default_factory=list)
    fetched: int = 0
    fetchmany_sizes: list[int] = field(default_factory=list)

    def clear(self) -> None:
        self.statements.clear()
        self.fetched = 0
        self.fetchmany_sizes.clear()


def _recording_connection(recorder: Recorder) -> type[sqlite3.Connection]:
    class Cursor(sqlite3.Cursor):
        def fetchone(self) -> Any:
            row = super().fetchone()
            recorder.fetched += row is not None
            return row

        def fetchmany(self, size: int | None = None) -> list[Any]:
            rows = super().fetchmany(self.arraysize if size is None else size)
            recorder.fetchmany_sizes.append(self.arraysize if size is None else size)
            recorder.fetched += len(rows)
            return rows

        def fetchall(self) -> list[Any]:
            rows = super().fetchall()
            recorder.fetched += len(rows)
            return rows

    class Connection(sqlite3.Connection):
        def cursor(self, factory: Any = Cursor) -> Any:
            return super().cursor(factory)

    return Connection


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(4)
    age = rng.integers(18, 90, N_ROWS)
    sex = rng.choice(["F", "M"], N_ROWS)
    smoking = rng.choice(["current", "former", "never"], N_ROWS)
    deprivation = rng.integers(1, 6, N_ROWS)
    bmi = np.where(rng.random(N_ROWS) < 0.05, np.nan, rng.normal(27, 4, N_ROWS).round(1))
    sbp = (110 + 0.5 * age + rng.normal(0, 12, N_ROWS)).round()
    diabetes = (rng.random(N_ROWS) < 1 / (1 + np.exp(-(-4 + 0.05 * age)))).astype(int)
    path = tmp_path_factory.mktemp("pushdown") / "cohort.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE cohort (age INTEGER, sex TEXT, smoking TEXT, deprivation INTEGER, "
            "bmi REAL, sbp REAL, diabetes INTEGER, name TEXT)"
        )
        conn.executemany(
            "INSERT INTO cohort VALUES (?, ?, ?, ?, ?, ?, ?, 'x')",
            (
                (
                    int(a),
                    str(s),
                    str(k),
                    int(d),
                    None if np.isnan(b) else float(b),
                    float(p),
                    int(y),
                )
                for a, s, k, d, b, p, y in zip(
                    age, sex, smoking, deprivation, bmi, sbp, diabetes, strict=True
                )
            ),
        )
    conn.close()
    return path


@pytest.fixture
def recorded(cohort_file: Path) -> Iterator[tuple[DataSource, Recorder]]:
    """The declared source, its engine swapped for one that records statements and fetches."""
    source = open_sql_source("cohort", f"sqlite:///{cohort_file}", "cohort", COLUMNS)
    source.engine.dispose()
    recorder = Recorder()
    engine = sa.create_engine(
        f"sqlite:///file:{cohort_file}?mode=ro&uri=true",
        connect_args={"factory": _recording_connection(recorder)},
    )

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        recorder.statements.append(" ".join(statement.split()))

    with engine.connect():
        pass  # the dialect's first-connect queries are not the analysis'
    recorder.clear()
    schema = replace(source.schema, grids={"age": 5.0})  # the TRE's grid for histogram bounds
    yield replace(source, engine=engine, schema=schema), recorder
    engine.dispose()


def _compute(
    name: str, params: Mapping[str, Any], source: DataSource, *, trace: bool = True
) -> tuple[Any, int]:
    """Run one analysis' local computation; return its raw output and Python's peak bytes."""
    analysis = CATALOGUE[name]
    if not trace:
        return analysis.compute(analysis.validate(params), source), 0
    tracemalloc.start()
    try:
        raw = analysis.compute(analysis.validate(params), source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return raw, peak


# Each case: parameters and the most rows the aggregate may bring back (groups x what each
# group returns, dominance top-k included).
AGGREGATES = {
    "count": ({"filter": {"col": "age", "op": ">=", "value": 40}}, 1),
    "crosstab": ({"rows": "sex", "columns": "smoking"}, 2 * 3),
    "summary": ({"column": "bmi", "by": "smoking"}, 3 * (2 + MAX_DOMINANCE_N)),
    "histogram": ({"column": "age", "width": 10}, 9),
    "linear_regression": (
        {"outcome": "sbp", "covariates": ["age", "sex", "C(deprivation)", "bmi"]},
        # level counts of two categoricals, the means, the cross-products, the largest
        # |values| of the outcome and the two numeric covariates (dominance), and the
        # largest leverage (one row)
        2 + 5 + 2 + 3 * MAX_DOMINANCE_N + 1,
    ),
    "correlation": ({"columns": ["age", "bmi", "sbp"]}, 2 + 3 * MAX_DOMINANCE_N),
    "cox": (
        # age as the time: 72 distinct times. The event check, the level counts of sex, the
        # model's records, the largest |sbp|, the leverage (three rows), and one row per
        # distinct event time (the risk-set sums, accumulated in the engine)
        {"time": "age", "event": "diabetes", "covariates": ["sbp", "sex"]},
        1 + 2 + 1 + MAX_DOMINANCE_N + 3 + 72,
    ),
}


@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_aggregate_sql_is_sent_and_only_aggregates_come_back(
    name: str, recorded: tuple[DataSource, Recorder]
) -> None:
    # Given a 20,000-row table behind a recording engine
    source, recorder = recorded
    params, most_rows = AGGREGATES[name]

    # When the analysis computes locally (once before, so lazy imports are not counted)
    _compute(name, params, source, trace=False)
    recorder.clear()
    _, peak = _compute(name, params, source)

    # Then every statement is an aggregate (or a top-k ranking) computed by the engine
    assert recorder.statements
    for statement in recorder.statements:
        assert AGGREGATE_FUNCTIONS.search(statement) or TOP_K.search(statement), statement
    # And only the aggregates' rows came back, bounded by groups, not by the table's rows
    assert 0 < recorder.fetched <= most_rows
    # And Python never held anything the size of the table
    assert peak < TABLE_IN_PYTHON_BYTES / 10


def test_the_probe_catches_an_analysis_that_reads_the_rows(
    recorded: tuple[DataSource, Recorder],
) -> None:
    # Given a summary computed the naive way, by reading the column's rows into Python
    source, recorder = recorded
    tracemalloc.start()
    with source.engine.connect() as conn:
        values = [v for (v,) in conn.execute(sa.select(source.table.c.bmi)) if v is not None]
    mean = sum(values) / len(values)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Then each of the checks above would fail for it
    assert mean > 0
    assert not AGGREGATE_FUNCTIONS.search(recorder.statements[0])
    assert not TOP_K.search(recorder.statements[0])
    assert recorder.fetched == N_ROWS
    assert peak > N_ROWS * 24  # 20,000 floats and a list of them


def test_glm_rounds_stream_rows_in_bounded_chunks(
    recorded: tuple[DataSource, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a logistic regression whose rounds read the complete cases
    source, recorder = recorded
    params = {"outcome": "diabetes", "covariates": ["age", "sex", "bmi"], "family": "binomial"}
    analysis = CATALOGUE["glm"]
    assert isinstance(analysis, IterativeAnalysis)
    whole, _ = _compute("glm", params, source, trace=False)
    complete = whole["n"]
    assert complete > N_ROWS * 0.9

    # When the chunk size is lowered to 1,000 rows
    recorder.clear()
    monkeypatch.setattr(glm, "CHUNK_ROWS", 1_000)
    chunked, _ = _compute("glm", params, source, trace=False)

    # Then the rows come in fetches of at most 1,000, enough of them to cover every record
    assert recorder.fetchmany_sizes and max(recorder.fetchmany_sizes) <= 1_000
    assert len(recorder.fetchmany_sizes) >= complete // 1_000
    # And the statements that are not the streamed design rows are aggregates
    # (or the dominance rules' top-k of each numeric column)
    streamed = [
        s for s in recorder.statements if not (AGGREGATE_FUNCTIONS.search(s) or TOP_K.search(s))
    ]
    assert len(streamed) == 1 and streamed[0].startswith("SELECT CAST(cohort.diabetes")
    # And the sums are those of the whole table read at once
    assert chunked["n"] == complete
    np.testing.assert_allclose(chunked["xtwx"], whole["xtwx"], rtol=1e-12)
    np.testing.assert_allclose(chunked["xtwz"], whole["xtwz"], rtol=1e-12)
    assert chunked["deviance"] == pytest.approx(whole["deviance"], rel=1e-12)
