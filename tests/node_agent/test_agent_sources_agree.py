"""The same records give the same answers from SQLite, PostgreSQL, CSV, Parquet and Spark.

One cohort is written four ways (Parquet read both by DuckDB and by Spark SQL) and declared in one agent config file, each dataset by
url and table or by file. Every analysis' local computation must give the same raw output
from each (floating point to 1e-9 relative), and the simple ones must match pandas.
The PostgreSQL source is the real server (FEDTRE_TEST_PG_URL), in a schema of its own.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import CATALOGUE
from fedtre.analyses.base import DataSource
from fedtre.disclosure.policy import UNKEYED
from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import DatasetConfig, load_config
from node_agent.sources import close_sources, key_sources, open_source, open_sources
from node_agent.sources.sql import open_sql_source

PG_URL = os.environ.get("FEDTRE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
N_ROWS = 400
# The TRE's grids for the columns whose bounds the histogram, quantiles and survival release.
GRIDS = "grids = { sbp = 5, bmi = 0.5, days = 1 }"
COLUMNS = {
    "age": "integer",
    "sex": "string",
    "smoking": "string",
    "smoker": "boolean",
    "bmi": "float",
    "sbp": "float",
    "diabetes": "integer",
    "days": "integer",
    "event": "integer",
    "seen_on": "date",
}
SQL_TYPES = {
    "smoker": sa.Boolean(),
    "seen_on": sa.Date(),
    "age": sa.Integer(),
    "diabetes": sa.Integer(),
    "days": sa.Integer(),
    "event": sa.Integer(),
}


def _cohort() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    age = rng.integers(18, 90, N_ROWS)
    smoking = rng.choice(np.array(["current", "former", "never", None], dtype=object), N_ROWS)
    bmi = np.where(rng.random(N_ROWS) < 0.1, np.nan, rng.normal(27, 4, N_ROWS).round(2))
    return pd.DataFrame(
        {
            "age": age,
            "sex": rng.choice(["F", "M"], N_ROWS),
            "smoking": smoking,
            "smoker": smoking == "current",
            "bmi": bmi,
            "sbp": (110 + 0.5 * age + rng.normal(0, 12, N_ROWS)).round(1),
            "diabetes": (rng.random(N_ROWS) < 1 / (1 + np.exp(-(-4 + 0.05 * age)))).astype(int),
            "days": rng.integers(1, 60, N_ROWS),
            "event": (rng.random(N_ROWS) < 0.4).astype(int),
            "seen_on": [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in age * 9],
        }
    )


COHORT = _cohort()


@pytest.fixture(scope="module")
def pg_schema_if_any(postgres_url_if_any: str | None) -> Iterator[str | None]:
    """A PostgreSQL schema of its own holding the cohort, dropped afterwards.

    None when PostgreSQL is absent outside CI (the other sources are still compared);
    in CI its absence fails.
    """
    if postgres_url_if_any is None:
        yield None
        return
    schema = f"fedtre_src_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
        COHORT.assign(secret="x").to_sql(
            "cohort", conn, schema=schema, index=False, dtype=SQL_TYPES
        )
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


@pytest.fixture
def pg_schema(pg_schema_if_any: str | None) -> str:
    if pg_schema_if_any is None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    return pg_schema_if_any


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cohort as a SQLite file, a CSV and a Parquet file (each with an undeclared column)."""
    home = tmp_path_factory.mktemp("sources")
    frame = COHORT.assign(secret="x")
    paths = {k: home / f"cohort.{k}" for k in ("sqlite", "csv", "parquet")}
    engine = sa.create_engine(f"sqlite:///{paths['sqlite']}")
    with engine.begin() as conn:
        frame.to_sql("cohort", conn, index=False, dtype=SQL_TYPES)
    engine.dispose()
    frame.to_csv(paths["csv"], index=False)
    with duckdb.connect() as conn:
        conn.register("frame", frame)
        conn.execute(
            "COPY (SELECT * REPLACE (CAST(seen_on AS DATE) AS seen_on) FROM frame) "
            f"TO '{paths['parquet']}' (FORMAT parquet)"
        )
    return paths


@pytest.fixture(scope="module")
def sources(
    files: dict[str, Path],
    pg_schema_if_any: str | None,
    spark_master_if_any: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, DataSource]]:
    """The five datasets, declared in one agent config file, opened and keyed as the agent
    does (the DuckDB CSV and Parquet ones read their keyed extracts; the others hash in SQL)."""
    home = tmp_path_factory.mktemp("agent")
    bundle = home / "bundle"
    bundle.mkdir()
    for name in ("ca", "cert", "key"):
        (bundle / f"{name}.pem").write_text("placeholder\n")
    columns = "\n".join(f'{c} = "{t}"' for c, t in COLUMNS.items())
    declared = {
        "on_sqlite": f'url = "sqlite:///{files["sqlite"]}"\ntable = "cohort"',
        "on_csv": f'csv = "{files["csv"]}"',
        "on_parquet": f'parquet = "{files["parquet"]}"',
    }
    if pg_schema_if_any is not None:
        declared["on_postgres"] = f'url = "{PG_URL}"\ntable = "{pg_schema_if_any}.cohort"'
    if spark_master_if_any is not None:
        declared["on_spark"] = (
            f'parquet = "{files["parquet"]}"\nengine = "spark"\n'
            f'spark_master = "{spark_master_if_any}"'
        )
    text = 'node_id = "tre-a"\ncoordinator = "localhost:1"\n[tls]\ndir = "bundle"\n' + "".join(
        f"[datasets.{name}]\n{how}\n{GRIDS}\n[datasets.{name}.columns]\n{columns}\n"
        for name, how in declared.items()
    )
    (home / "agent.toml").write_text(text)
    config = load_config(home / "agent.toml")
    opened = key_sources(open_sources(config), config, UNKEYED)
    assert opened["on_parquet"].refresh is not None and opened["on_sqlite"].refresh is None
    assert "on_spark" not in opened or opened["on_spark"].refresh is None
    try:
        yield opened
    finally:
        close_sources(opened)


CASES: dict[str, dict[str, Any]] = {
    "count": {
        "filter": {
            "and": [
                {"col": "seen_on", "op": ">=", "value": "2020-09-01"},
                {"col": "smoker", "op": "==", "value": False},
            ]
        }
    },  # fmt: skip
    "crosstab": {"rows": "smoking", "columns": "smoker"},
    "summary": {"column": "bmi", "by": "sex", "filter": {"col": "age", "op": "<", "value": 70}},
    "histogram": {"column": "sbp", "width": 10},
    "quantiles": {"column": "bmi", "width": 0.5},
    "correlation": {"columns": ["age", "bmi", "sbp"]},
    "linear_regression": {"outcome": "sbp", "covariates": ["age", "sex", "smoking", "smoker"]},
    "glm": {"outcome": "diabetes", "covariates": ["age", "sex", "bmi"], "family": "binomial"},
    "kaplan_meier": {"time": "days", "event": "event", "by": "sex"},
    "cox": {"time": "days", "event": "event", "covariates": ["age", "sex", "bmi"]},
}


def _same(a: Any, b: Any, where: str) -> None:
    """Assert two raw outputs are equal, floats to 1e-9 relative (engines sum in any order)."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and sorted(a) == sorted(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, int | float), where
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# Groups with a NULL key, larger than the SQLite per-group paths allow (contributors.py)
MORE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "summary_null_group": ("summary", {"column": "sbp", "by": "smoking"}),
    "summary_many_groups": ("summary", {"column": "bmi", "by": "days"}),
}


@pytest.mark.parametrize("case", sorted(CASES) + sorted(MORE_CASES))
def test_every_source_gives_the_same_local_result(
    case: str, sources: dict[str, DataSource]
) -> None:
    # Given the same records in SQLite, PostgreSQL, CSV and Parquet
    name, given = MORE_CASES.get(case, (case, CASES.get(case, {})))
    analysis = CATALOGUE[name]
    params = analysis.validate(given)

    # When the analysis computes on each
    raw = {dataset: analysis.compute(params, source) for dataset, source in sources.items()}

    # Then each answer equals SQLite's
    for dataset in sorted(set(raw) - {"on_sqlite"}):
        _same(raw["on_sqlite"], raw[dataset], f"{name} on {dataset}")


def test_the_shared_answers_match_pandas(sources: dict[str, DataSource]) -> None:
    # Given pandas' own computation on the cohort
    frame = COHORT
    kept = frame[(frame.seen_on >= dt.date(2020, 9, 1)) & ~frame.smoker]
    young = frame[frame.age < 70].dropna(subset=["bmi"])
    by_sex = young.groupby("sex").bmi
    table = frame.dropna(subset=["smoking"]).groupby(["smoking", "smoker"]).size()

    for dataset, source in sources.items():
        # When each source computes a count, a summary and a crosstab
        count = CATALOGUE["count"].compute(CATALOGUE["count"].validate(CASES["count"]), source)
        summary = CATALOGUE["summary"].compute(
            CATALOGUE["summary"].validate(CASES["summary"]), source
        )
        crosstab = CATALOGUE["crosstab"].compute(
            CATALOGUE["crosstab"].validate(CASES["crosstab"]), source
        )

        # Then they are pandas' figures
        assert count["n"] == len(kept), dataset
        groups = {row[0]: row[1:4] for row in summary["groups"]}
        assert sorted(groups) == ["F", "M"], dataset
        for sex, (n, mean, m2) in groups.items():
            assert n == by_sex.count()[sex], dataset
            assert mean == pytest.approx(by_sex.mean()[sex], rel=1e-12), dataset
            assert m2 == pytest.approx(by_sex.var(ddof=0)[sex] * n, rel=1e-9), dataset
        cells = {(r, c): n for r, c, n, _key in crosstab["cells"] if r is not None}
        expected = {
            (r, str(c).lower()): 0 for r in ("current", "former", "never") for c in (False, True)
        }
        expected |= {(r, str(c).lower()): int(n) for (r, c), n in table.items()}
        assert {(r, str(c).lower()): n for (r, c), n in cells.items()} == expected, dataset


def test_every_source_gives_the_same_cox_round_at_a_given_beta(
    sources: dict[str, DataSource],
) -> None:
    # Given a later cox round (beta away from 0: the engine's exp() and window sums at work)
    from fedtre.analyses.iterative import with_round

    cox = CATALOGUE["cox"]
    round_params = {"beta": [0.03, -0.4, 0.05], "levels": {"sex": ["F", "M"]}}
    params = with_round(cox, cox.validate(CASES["cox"]), round_params)

    # When each source computes it
    raw = {dataset: cox.compute(params, source) for dataset, source in sources.items()}

    # Then each answer equals SQLite's
    assert raw["on_sqlite"]["finite"] and raw["on_sqlite"]["events"] > 0
    for dataset in sorted(set(raw) - {"on_sqlite"}):
        _same(raw["on_sqlite"], raw[dataset], f"cox round on {dataset}")


def test_every_source_gives_the_same_glm_rounds_at_a_given_beta(
    sources: dict[str, DataSource],
) -> None:
    # Given later logistic and Poisson rounds (the engine's exp() and ln() at work, one
    # beta far enough out that some linear predictors reach exp's clamps)
    from fedtre.analyses.iterative import with_round

    glm = CATALOGUE["glm"]
    cases = [
        (CASES["glm"], [-3.0, 0.04, -0.3, 0.02]),
        (CASES["glm"], [-800.0, 12.0, -0.3, 0.02]),
        ({**CASES["glm"], "outcome": "days", "family": "poisson"}, [3.0, 0.01, 0.1, 0.01]),
    ]
    for given, beta in cases:
        params = with_round(glm, glm.validate(given), {"beta": beta, "levels": {"sex": ["F", "M"]}})

        # When each source computes it
        raw = {dataset: glm.compute(params, source) for dataset, source in sources.items()}

        # Then each answer equals SQLite's
        assert raw["on_sqlite"]["finite"] and raw["on_sqlite"]["n"] > 0
        for dataset in sorted(set(raw) - {"on_sqlite"}):
            _same(raw["on_sqlite"], raw[dataset], f"glm {given['family']} round on {dataset}")


# -- clear errors --------------------------------------------------------------------------


def test_postgres_missing_table_is_named(pg_schema: str) -> None:
    with pytest.raises(NotFound, match=rf"table or view '{pg_schema}.cohrt' does not exist"):
        open_sql_source("cohort", PG_URL, f"{pg_schema}.cohrt", COLUMNS)


def test_postgres_missing_columns_are_listed(pg_schema: str) -> None:
    with pytest.raises(NotFound, match=r"has no column\(s\) \['height'\] declared"):
        open_sql_source("cohort", PG_URL, f"{pg_schema}.cohort", {**COLUMNS, "height": "float"})


def test_unreachable_database_is_explained() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    with pytest.raises(InvalidRequest, match="check the url and the agent's database access"):
        open_sql_source("cohort", url, "cohort", COLUMNS)


def test_parquet_missing_columns_are_listed(files: dict[str, Path]) -> None:
    dataset = DatasetConfig("cohort", {**COLUMNS, "height": "float"}, parquet=files["parquet"])
    with pytest.raises(NotFound, match=r"Parquet .* has no column\(s\) \['height'\]"):
        open_source(dataset, files["parquet"].parent / "cache")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_missing_file_is_explained(kind: str, tmp_path: Path) -> None:
    dataset = DatasetConfig("cohort", COLUMNS, **{kind: tmp_path / f"absent.{kind}"})
    with pytest.raises(InvalidRequest, match=rf"cannot read {kind.upper()[:1]}.*absent\.{kind}"):
        open_source(dataset, tmp_path / "cache")


def test_unreadable_parquet_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "cohort.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    dataset = DatasetConfig("cohort", COLUMNS, parquet=path)
    with pytest.raises(InvalidRequest, match="is a well-formed Parquet file"):
        open_source(dataset, tmp_path / "cache")


def test_spark_missing_columns_are_listed(files: dict[str, Path], spark_master: str) -> None:
    columns = {**COLUMNS, "height": "float"}
    dataset = DatasetConfig("cohort", columns, parquet=files["parquet"], engine="spark")
    with pytest.raises(NotFound, match=r"Parquet .* has no column\(s\) \['height'\]"):
        open_source(dataset, files["parquet"].parent / "cache")


def test_spark_counts_values_that_do_not_fit_their_type(tmp_path: Path, spark_master: str) -> None:
    # Given a CSV whose integer column holds a fraction and a word (and a missing marker)
    path = tmp_path / "bad.csv"
    path.write_text("age,sex\n32,F\n32.5,M\nNA,F\nold,M\n")
    dataset = DatasetConfig("cohort", {"age": "integer", "sex": "string"}, csv=path, engine="spark")

    # Then Spark refuses it, naming the column and how many values, never a value
    with pytest.raises(
        InvalidRequest, match="column 'age' .* has 2 value.s. that are not whole"
    ) as e:
        open_source(dataset, tmp_path)
    assert "old" not in str(e.value) and "32.5" not in str(e.value)


def test_spark_unreadable_parquet_is_explained(tmp_path: Path, spark_master: str) -> None:
    path = tmp_path / "cohort.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    dataset = DatasetConfig("cohort", COLUMNS, parquet=path, engine="spark")
    with pytest.raises(InvalidRequest, match="Spark cannot read"):
        open_source(dataset, tmp_path)


def test_a_file_where_a_database_is_expected_is_explained(files: dict[str, Path]) -> None:
    with pytest.raises(InvalidRequest, match="dataset 'cohort': cannot read"):
        open_sql_source("cohort", f"sqlite:///{files['csv']}", "cohort", COLUMNS)


def test_duckdb_is_held_to_its_memory_limit_and_spills_into_the_agents_folder(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # Given a Parquet dataset opened as the agent opens it, with its private folder
    source = open_source(DatasetConfig("cohort", COLUMNS, parquet=files["parquet"]), tmp_path)
    try:
        # Then every pooled connection carries the memory limit and the spill folder
        with source.engine.connect() as conn:
            limit, spill = conn.exec_driver_sql(
                "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
            ).one()
    finally:
        source.engine.dispose()
    assert limit.replace(" ", "") in ("22.8MiB", "24.0MB")  # 24 MB, as DuckDB shows it
    assert spill == str(tmp_path / "duckdb-spill")
    assert not (tmp_path / "duckdb-spill").exists()  # made only when a query spills


# -- derived variables ----------------------------------------------------------------------

# Each derived variable, and pandas' own computation of it (NaN/None where it is missing).
DERIVED: dict[str, Any] = {
    "log(bmi)": lambda f: np.log(f.bmi),
    "exp(I(age / 10))": lambda f: np.exp(f.age / 10),
    "sqrt(sbp)": lambda f: np.sqrt(f.sbp),
    "I((age - 50) ** 2 / 100 + 1)": lambda f: (f.age - 50) ** 2 / 100 + 1,
    "I(days / (event + 0))": lambda f: (f.days / f.event).where(f.event != 0),
    "log(I(age - 60))": lambda f: np.log((f.age - 60).where(f.age > 60)),
    "age:bmi": lambda f: f.age * f.bmi,
    "smoker:age": lambda f: f.smoker.astype(float) * f.age,
    "sex:smoking": lambda f: (f.sex + ":" + f.smoking).where(f.smoking.notna()),
    "bands(age, [40, 60.5, 80])": lambda f: pd.cut(
        f.age,
        [-np.inf, 40, 60.5, 80, np.inf],
        right=False,
        labels=["(-inf, 40)", "[40, 60.5)", "[60.5, 80)", "[80, inf)"],
    ).astype(object),
    'recode(smoking, {"current": "ever", "former": "ever"})': lambda f: f.smoking.replace(
        {"current": "ever", "former": "ever"}
    ),
    "recode(diabetes, {1: 0, 0: 1})": lambda f: 1 - f.diabetes,
    "I(age >= 65)": lambda f: f.age >= 65,
    'I(seen_on < "2020-06-01")': lambda f: f.seen_on < dt.date(2020, 6, 1),
    'years_between(seen_on, "2030-01-01")': lambda f: (
        (pd.Timestamp("2030-01-01") - pd.to_datetime(f.seen_on)).dt.days / 365.25
    ),
}


def _derived_summary(values: pd.Series) -> Any:
    """Per derived variable: (count, sum) of a numeric one, level counts of any other."""
    kept = values.dropna()
    if pd.api.types.is_float_dtype(kept) and not pd.api.types.is_bool_dtype(kept):
        return (len(kept), float(kept.sum()))
    return {
        str(k).lower() if isinstance(k, bool | np.bool_) else str(k): int(n)
        for k, n in kept.astype(object).value_counts().items()
    }


@pytest.mark.parametrize("expression", sorted(DERIVED))
def test_derived_variables_are_pandas_on_every_engine(
    expression: str, sources: dict[str, DataSource]
) -> None:
    from fedtre.analyses.derived import with_derived
    from fedtre.analyses.labels import category_label

    # Given pandas' own values of the derived variable
    expected = _derived_summary(DERIVED[expression](COHORT))

    for dataset, source in sources.items():
        # When the engine computes it as a column of the source
        derived = with_derived(source, {"column": expression})
        column = derived.table.c[expression]
        kind = derived.schema.columns[expression]
        with derived.engine.connect() as conn:
            if kind == "float":
                row = conn.execute(
                    sa.select(sa.func.count(column), sa.func.sum(column)).select_from(derived.table)
                ).one()
                got: Any = (row[0], float(row[1]))
            else:
                rows = conn.execute(
                    sa.select(column, sa.func.count()).group_by(column).select_from(derived.table)
                ).all()
                got = {category_label(v, kind): n for v, n in rows if v is not None}

        # Then it is pandas' (numbers to 1e-9: engines sum in any order)
        if kind == "float":
            assert got[0] == expected[0], dataset
            assert got[1] == pytest.approx(expected[1], rel=1e-9), dataset
        else:
            assert got == expected, dataset


def test_derived_variables_flow_through_every_analysis_alike(
    sources: dict[str, DataSource],
) -> None:
    from fedtre.analyses.derived import with_derived

    cases = {
        "count": {"filter": {"col": "bands(age, [40, 60])", "op": "==", "value": "[40, 60)"}},
        "crosstab": {"rows": "bands(age, [40, 60])", "columns": "I(bmi > 27)"},
        "summary": {"column": "log(bmi)", "by": 'recode(smoking, {"former": "ever"})'},
        "linear_regression": {"outcome": "log(sbp)", "covariates": ["I(age ** 2)", "sex:smoking"]},
        "glm": {"outcome": "diabetes", "covariates": ["age:bmi"], "family": "binomial"},
    }
    for name, given in cases.items():
        analysis = CATALOGUE[name]
        params = analysis.validate(given)
        raw = {
            dataset: analysis.compute(params, with_derived(source, params))
            for dataset, source in sources.items()
        }
        for dataset in sorted(set(raw) - {"on_sqlite"}):
            _same(raw["on_sqlite"], raw[dataset], f"{name} on {dataset}")
