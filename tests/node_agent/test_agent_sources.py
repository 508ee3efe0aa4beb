"""Data sources: real SQLite and CSV files, exposing only declared columns, checked at start."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import DatasetConfig
from node_agent.sources import cache_dir_for, close_sources, open_source, open_sources
from node_agent.sources.sql import open_sql_source, readonly_sqlite_url

COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}


def _rows(source: object, *columns: str) -> list[tuple]:
    table = source.table  # type: ignore[attr-defined]
    with source.engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(r) for r in conn.execute(sa.select(*(table.c[c] for c in columns)))]


def test_sqlite_table_exposes_only_the_declared_columns(cohort_db: Path) -> None:
    # Given a table with an undeclared 'secret' column
    source = open_sql_source("cohort", f"sqlite:///{cohort_db}", "cohort", COLUMNS)
    try:
        # Then the Core table has exactly the declared columns, typed, and aggregates run
        assert list(source.table.c.keys()) == ["age", "sex", "bmi"]
        assert isinstance(source.table.c.age.type, sa.Integer)
        assert source.schema.name == "cohort" and source.schema.columns == COLUMNS
        with source.engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(source.table)).scalar_one()
        assert n == 23
        assert "secret" not in source.table.c
    finally:
        source.engine.dispose()


def test_sqlite_source_is_read_only(cohort_db: Path) -> None:
    source = open_sql_source("cohort", f"sqlite:///{cohort_db}", "cohort", COLUMNS)
    try:
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            with source.engine.begin() as conn:
                conn.execute(source.table.delete())
        assert len(_rows(source, "age")) == 23
    finally:
        source.engine.dispose()


def test_a_view_can_be_a_dataset(cohort_db: Path) -> None:
    source = open_sql_source("adults", f"sqlite:///{cohort_db}", "adults", {"age": "integer"})
    try:
        assert len(_rows(source, "age")) == 13
    finally:
        source.engine.dispose()


def test_missing_table_is_named(cohort_db: Path) -> None:
    with pytest.raises(NotFound, match="dataset 'cohort': table or view 'cohrt' does not exist"):
        open_sql_source("cohort", f"sqlite:///{cohort_db}", "cohrt", COLUMNS)


def test_missing_columns_are_all_listed(cohort_db: Path) -> None:
    columns = {**COLUMNS, "height": "float", "smoker": "boolean"}
    with pytest.raises(NotFound) as caught:
        open_sql_source("cohort", f"sqlite:///{cohort_db}", "cohort", columns)
    message = str(caught.value)
    assert "no column(s) ['height', 'smoker'] declared in [datasets.cohort.columns]" in message


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "absent.sqlite"
    with pytest.raises(NotFound, match=r"dataset 'cohort': SQLite database file .* does not exist"):
        open_sql_source("cohort", f"sqlite:///{missing}", "cohort", COLUMNS)
    assert not missing.exists()


def test_readonly_rewrite_leaves_other_databases_alone() -> None:
    url = sa.make_url("postgresql://reader@db/research")
    assert readonly_sqlite_url(url) is url


def test_unknown_driver_is_explained(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="check the URL and that its database driver"):
        open_sql_source("cohort", "nosuchdb://host/db", "cohort", COLUMNS)


CSV = """id,age,sex,bmi,smoker,seen_on,note
1,34,F,22.5,true,2021-03-04,a
2,51,M,,no,2020-12-31,b
3,,F,30,1,,c
4,47,M,27.25,FALSE,2022-01-15T10:30:00,d
"""
CSV_COLUMNS = {
    "age": "integer",
    "sex": "string",
    "bmi": "float",
    "smoker": "boolean",
    "seen_on": "date",
}


def _csv_dataset(tmp_path: Path, text: str, columns: dict[str, str] | None = None) -> DatasetConfig:
    path = tmp_path / "visits.csv"
    path.write_text(text)
    return DatasetConfig("visits", columns or CSV_COLUMNS, csv=path)


def test_csv_is_read_typed_in_place_through_duckdb(tmp_path: Path) -> None:
    # Given a CSV with more columns than declared and missing values
    dataset = _csv_dataset(tmp_path, CSV)
    cache = tmp_path / "cache"

    # When it is opened as a source
    source = open_source(dataset, cache)
    try:
        # Then only declared columns are present, typed; missing values are NULL
        assert list(source.table.c.keys()) == list(CSV_COLUMNS)
        assert _rows(source, *CSV_COLUMNS) == [
            (34, "F", 22.5, True, dt.date(2021, 3, 4)),
            (51, "M", None, False, dt.date(2020, 12, 31)),
            (None, "F", 30.0, True, None),
            (47, "M", 27.25, False, dt.date(2022, 1, 15)),
        ]
    finally:
        source.engine.dispose()
    # And DuckDB read the file in place: the dataset's database in the private folder
    # holds no table (records are copied only into the agent's keyed extract)
    assert source.engine.dialect.name == "duckdb"
    assert [p.name for p in cache.iterdir()] == ["visits.duckdb"]
    assert cache.stat().st_mode & 0o777 == 0o700
    assert (cache / "visits.duckdb").stat().st_mode & 0o777 == 0o600
    with duckdb.connect(str(cache / "visits.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]


def test_csv_is_loaded_afresh_at_each_start(tmp_path: Path) -> None:
    dataset = _csv_dataset(tmp_path, CSV)
    open_source(dataset, tmp_path / "cache").engine.dispose()
    dataset.csv.write_text(CSV + "5,60,F,21,no,2023-01-01,e\n")  # type: ignore[union-attr]

    source = open_source(dataset, tmp_path / "cache")
    try:
        assert len(_rows(source, "age")) == 5
    finally:
        source.engine.dispose()


def test_csv_missing_columns_are_listed(tmp_path: Path) -> None:
    dataset = _csv_dataset(tmp_path, CSV, {**CSV_COLUMNS, "height": "float", "weight": "float"})
    with pytest.raises(
        NotFound, match=r"CSV .*visits.csv has no column\(s\) \['height', 'weight'\]"
    ):
        open_source(dataset, tmp_path / "cache")


@pytest.mark.parametrize(
    ("column", "typ", "value", "expected"),
    [
        ("age", "integer", "thirty-two", "whole numbers"),
        ("age", "integer", "32.5", "whole numbers"),
        ("bmi", "float", "heavy", "numbers"),
        ("smoker", "boolean", "sometimes", "booleans"),
        ("seen_on", "date", "04/03/2021", "ISO 8601 dates"),
    ],
)
def test_csv_value_of_wrong_type_names_column_and_row_but_not_value(
    tmp_path: Path, column: str, typ: str, value: str, expected: str
) -> None:
    # Given a CSV whose third data row has a value not fitting its declared type
    good = {"age": "40", "bmi": "25.0", "smoker": "yes", "seen_on": "2021-01-01"}
    rows = [dict(good), dict(good), {**good, column: value}]
    text = "age,bmi,smoker,seen_on\n" + "".join(",".join(r.values()) + "\n" for r in rows)
    dataset = _csv_dataset(tmp_path, text, {c: CSV_COLUMNS[c] for c in good})

    # When it is loaded, the error names column, type and row and never echoes the value
    with pytest.raises(InvalidRequest) as caught:
        open_source(dataset, tmp_path / "cache")
    message = str(caught.value)
    assert f"column {column!r}" in message and expected in message
    assert "first on data row 3" in message
    assert value not in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_open_sources_builds_one_source_per_dataset(
    tmp_path: Path, cohort_db: Path, tls_dir: Path
) -> None:
    from node_agent.config import load_config

    (tmp_path / "visits.csv").write_text(CSV)
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
node_id = "tre-a"
coordinator = "localhost:1"
state_db = "run/state.sqlite"
[tls]
dir = "bundle"
[datasets.cohort]
url = "sqlite:///{cohort_db.relative_to(tmp_path)}"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
[datasets.visits]
csv = "visits.csv"
[datasets.visits.columns]
age = "integer"
"""
    )
    config = load_config(path)

    sources = open_sources(config)
    try:
        assert sorted(sources) == ["cohort", "visits"]
        assert len(_rows(sources["cohort"], "age")) == 23
        assert len(_rows(sources["visits"], "age")) == 4
        assert cache_dir_for(config) == tmp_path / "run" / "state-datasets"
        # The CSV's own DuckDB database is in the agent's private folder, the SQLite one not
        assert [p.name for p in cache_dir_for(config).iterdir()] == ["visits.duckdb"]
    finally:
        close_sources(sources)
