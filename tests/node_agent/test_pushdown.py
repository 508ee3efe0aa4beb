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
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.special import xlogy

from fedtre.analyses import CATALOGUE
from fedtre.analyses.base import DataSource
from fedtre.analyses.iterative import ROUND_KEY, split_round
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
    job, round_params = split_round(params)  # a later round's beta is not a job parameter
    given = {**analysis.validate(job), **({ROUND_KEY: round_params} if round_params else {})}
    if not trace:
        return analysis.compute(given, source), 0
    tracemalloc.start()
    try:
        raw = analysis.compute(given, source)
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


def _numpy_round(
    cohort_file: Path, outcome: str, basis: list[list[Any]], family: str, beta: np.ndarray | None
) -> dict[str, Any]:
    """One IRLS round computed independently: pandas reads the records, numpy sums."""
    with sqlite3.connect(cohort_file) as conn:
        frame = pd.read_sql("SELECT * FROM cohort", conn)
    conn.close()
    columns = {spec for spec, _ in basis} | {outcome}
    frame = frame.dropna(subset=sorted(columns))
    y = frame[outcome].to_numpy(dtype=float)
    x = np.column_stack(
        [np.ones(len(frame))]
        + [
            frame[spec].to_numpy(dtype=float) if label is None else (frame[spec] == label) * 1.0
            for spec, label in basis
        ]
    )
    if beta is None:
        mu = (y + (0.5 if family == "binomial" else y.mean())) / 2
        eta = np.log(mu / (1 - mu)) if family == "binomial" else np.log(mu)
    else:
        eta = x @ beta
        mu = 1 / (1 + np.exp(-eta)) if family == "binomial" else np.exp(eta)
    w = mu * (1 - mu) if family == "binomial" else mu
    wz = w * eta + (y - mu)
    if family == "binomial":
        deviance = 2 * np.sum(y * np.logaddexp(0, -eta) + (1 - y) * np.logaddexp(0, eta))
    else:
        deviance = 2 * np.sum(xlogy(y, y) - y * eta - y + mu)
    return {"n": len(y), "xtwx": x.T @ (x * w[:, None]), "xtwz": x.T @ wz, "deviance": deviance}


@pytest.mark.parametrize(
    ("family", "outcome", "later_beta"),
    [
        ("binomial", "diabetes", [-4.0, 0.05, 0.1, 0.01]),
        ("poisson", "deprivation", [1.0, 0.001, -0.02, 0.003]),
    ],
)
def test_glm_rounds_are_one_aggregate_each_equal_to_numpy_on_the_records(
    family: str,
    outcome: str,
    later_beta: list[float],
    recorded: tuple[DataSource, Recorder],
    cohort_file: Path,
) -> None:
    # Given a regression on the 20,000-row table, its first round and a later one
    source, recorder = recorded
    params = {"outcome": outcome, "covariates": ["age", "sex", "bmi"], "family": family}
    later = {**params, "round": {"beta": later_beta, "levels": {"sex": ["F", "M"]}}}
    for given, beta in ((params, None), (later, np.array(later_beta))):
        # When a node computes the round (once before, so lazy imports are not counted)
        _compute("glm", given, source, trace=False)
        recorder.clear()
        raw, peak = _compute("glm", given, source)

        # Then every statement is an aggregate (or a top-k ranking): no record is streamed
        assert recorder.statements
        for statement in recorder.statements:
            assert AGGREGATE_FUNCTIONS.search(statement) or TOP_K.search(statement), statement
        assert recorder.fetched < 100 + 3 * MAX_DOMINANCE_N
        assert peak < TABLE_IN_PYTHON_BYTES / 10
        # And the sums are numpy's over the same records read by pandas
        expected = _numpy_round(cohort_file, outcome, raw["basis"], family, beta)
        assert raw["n"] == expected["n"] and raw["finite"]
        np.testing.assert_allclose(raw["xtwx"], expected["xtwx"], rtol=1e-10)
        np.testing.assert_allclose(raw["xtwz"], expected["xtwz"], rtol=1e-10, atol=1e-8)
        assert raw["deviance"] == pytest.approx(expected["deviance"], rel=1e-10)


def test_a_poisson_round_whose_exp_overflows_is_reported_not_finite(
    recorded: tuple[DataSource, Recorder],
) -> None:
    # Given a Poisson round at a beta whose linear predictor reaches exp's overflow (age 89 x 9)
    source, _ = recorded
    params = {
        "outcome": "deprivation",
        "covariates": ["age"],
        "family": "poisson",
        "round": {"beta": [0.0, 9.0], "levels": {}},
    }
    # When a node computes it
    raw, _ = _compute("glm", params, source, trace=False)
    # Then the round says it is not finite (the coordinator halves the step), as numpy's
    # overflow would, rather than failing in the engine
    assert raw["finite"] is False


def test_a_jobs_later_rounds_read_the_records_once_for_their_checks(
    recorded: tuple[DataSource, Recorder],
) -> None:
    # Given a logistic regression's later round, computed once at one beta
    source, recorder = recorded
    params = {"outcome": "diabetes", "covariates": ["age", "sex"], "family": "binomial"}
    levels = {"sex": ["F", "M"]}
    first, _ = _compute(
        "glm",
        {**params, "round": {"beta": [-4.0, 0.05, 0.1], "levels": levels}},
        source,
        trace=False,
    )

    # When the next round (another beta) is computed
    recorder.clear()
    beta = [-4.1, 0.051, 0.12]
    later, _ = _compute(
        "glm", {**params, "round": {"beta": beta, "levels": levels}}, source, trace=False
    )

    # Then only the round's sums are sent: the checks' inputs (levels, records, cell key,
    # largest values, leverage) are those of the same records, read in the earlier round
    assert len(recorder.statements) == 1 and "terms" in recorder.statements[0]
    for name in ("n", "key", "leverage", "magnitudes", "level_counts", "outcome_counts"):
        assert later[name] == first[name], name
    # And the sums are those at the new beta (as a fresh computation finds them)
    fresh_source = replace(source, engine=sa.create_engine(source.engine.url))
    fresh, _ = _compute(
        "glm", {**params, "round": {"beta": beta, "levels": levels}}, fresh_source, trace=False
    )
    fresh_source.engine.dispose()
    np.testing.assert_allclose(later["xtwx"], fresh["xtwx"], rtol=1e-12)
    assert later["deviance"] != first["deviance"]


def test_a_later_round_reads_the_checks_again_when_the_records_changed(
    cohort_file: Path, tmp_path: Path
) -> None:
    # Given a later round computed on a copy of the table (its checks kept for the job)
    copy = tmp_path / "cohort.sqlite"
    copy.write_bytes(cohort_file.read_bytes())
    source = open_sql_source("cohort", f"sqlite:///{copy}", "cohort", COLUMNS)
    params = {
        "outcome": "diabetes",
        "covariates": ["age", "sex"],
        "family": "binomial",
        "round": {"beta": [-4.0, 0.05, 0.1], "levels": {"sex": ["F", "M"]}},
    }
    before, _ = _compute("glm", params, source, trace=False)

    # When records are added before the next round
    with sqlite3.connect(copy) as conn:
        conn.executemany(
            "INSERT INTO cohort VALUES (?, 'F', 'never', 3, 25.0, 120.0, ?, 'x')",
            [(40 + i, i % 2) for i in range(50)],
        )
    conn.close()
    after, _ = _compute("glm", params, source, trace=False)

    # Then its checks are those of the new records, as a fresh computation finds them
    fresh_source = replace(source, engine=sa.create_engine(f"sqlite:///{copy}"))
    fresh, _ = _compute("glm", params, fresh_source, trace=False)
    assert after["n"] == before["n"] + 50 == fresh["n"]
    for name in ("key", "leverage", "magnitudes", "level_counts", "outcome_counts"):
        assert after[name] == fresh[name], name
    source.engine.dispose()
    fresh_source.engine.dispose()
